//! The secrets that claim value and results connections, and the
//! delivery of each claimed connection to whoever offered it.
//!
//! A client that asks for a value connection gets a secret token with its
//! job's acceptance; a worker gets one with its session's welcome. Either
//! opens a TCP connection to the coordinator's port and presents the
//! token (the handshake is in [`farm_net::side_connection`]). The
//! listener recognises the connection and [`ValueOffers::claim`] hands it
//! to the task that offered it: the job's stream task, which then writes
//! the released values there instead of into the gRPC stream, or the
//! worker's session, which reads results from it.
//!
//! A peer that cannot open the connection (a proxy that only passes
//! HTTP/2, say) still gets its values through: a job's after
//! [`CoordinatorConfig::value_connection_wait`](crate::CoordinatorConfig)
//! in its stream as before, a worker's results in its session.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Mutex;

use farm_net::auth::same_bytes;
use farm_net::side_connection::{Hello, Purpose, TOKEN_BYTES, Token};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Offered connections not yet claimed, by purpose and job or worker id.
#[derive(Debug, Default)]
pub struct ValueOffers {
    offers: Mutex<HashMap<(Purpose, u64), Offer>>,
}

#[derive(Debug)]
struct Offer {
    token: Token,
    deliver: oneshot::Sender<TcpStream>,
}

/// Why a value connection could not be offered.
#[derive(Debug, thiserror::Error)]
#[error("no randomness for a connection's token: {0}")]
pub struct NoToken(getrandom::Error);

impl ValueOffers {
    /// Offers the job or worker `id` a connection for `purpose`: the token
    /// its peer must present, and where the connection will arrive.
    pub fn offer(
        &self,
        purpose: Purpose,
        id: u64,
    ) -> Result<(Token, oneshot::Receiver<TcpStream>), NoToken> {
        let mut token = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut token).map_err(NoToken)?;
        let (deliver, arrival) = oneshot::channel();
        self.lock().insert((purpose, id), Offer { token, deliver });
        Ok((token, arrival))
    }

    /// Hands `stream` to whoever offered what `hello` names, if its token
    /// is right and the offer still stands; otherwise gives it back.
    pub fn claim(&self, hello: &Hello, stream: TcpStream) -> Result<(), TcpStream> {
        let mut offers = self.lock();
        let Entry::Occupied(offer) = offers.entry((hello.purpose, hello.id)) else {
            return Err(stream);
        };
        if !same_bytes(&offer.get().token, &hello.token) {
            return Err(stream);
        }
        offer.remove().deliver.send(stream)
    }

    /// Ends an offer, claimed or not.
    pub fn withdraw(&self, purpose: Purpose, id: u64) {
        self.lock().remove(&(purpose, id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Purpose, u64), Offer>> {
        // Each call is one insert or remove: nothing is left half done.
        self.offers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

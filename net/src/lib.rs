//! How farm's processes reach each other: everything between a message of
//! the contract (`farm-proto`) and a socket.
//!
//! - [`transport`]: connection settings and [`transport::Connection`],
//!   which carries gRPC calls over TCP (a tonic channel, or a direct
//!   HTTP/2 client for one-shot clients) or straight to an in-process
//!   coordinator.
//! - [`wire`]: farm's own gRPC framing, which moves bulk values without
//!   copying them.
//! - [`side_connection`]: the handshakes of the TCP connections that carry
//!   raw values beside gRPC (a job's value connection, a worker's results
//!   connection).
//! - [`splice`]: moving bytes between sockets, pipes and files inside the
//!   kernel (Linux).
//! - [`auth`]: the cluster secret, the worker and client tokens, and
//!   the one check a coordinator makes of every call and connection.
//! - [`display`]: showing text another process sent (escaped, bounded).
//! - [`peer`]: the one check that tells a coordinator from anything else
//!   listening on its port.
//! - [`metrics_http`]: the plain-HTTP `GET /metrics` endpoint.

pub mod auth;
pub mod display;
pub mod metrics_http;
pub mod peer;
pub mod side_connection;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod transport;
pub mod wire;

//! The server end of hand-framed calls.

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderValue;
use http::header::CONTENT_TYPE;
use prost::Message;
use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;

use super::{Encoded, FrameBody, GRPC_CONTENT_TYPE, MessageReader};

/// How long a client may take to send a call's one request message.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A response whose messages come from `body`.
pub fn response(body: FrameBody) -> http::Response<Body> {
    let mut response = http::Response::new(Body::new(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(GRPC_CONTENT_TYPE));
    response
}

/// The address of the peer behind a call, when it came over TCP.
pub fn remote_addr(request: &http::Request<Body>) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
}

/// The one message of a unary or server-streaming request.
pub async fn request_message<M: Message + Default>(body: Body) -> Result<M, Status> {
    let mut reader = MessageReader::new(body);
    let message = tokio::time::timeout(REQUEST_TIMEOUT, reader.message())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!("no request within {} s", REQUEST_TIMEOUT.as_secs()))
        })??;
    message.ok_or_else(|| Status::invalid_argument("the request carried no message"))
}

/// Serves a unary call: decodes its request, runs `handler` (which must
/// not block), and answers with its response or status.
pub async fn unary<Req, Resp>(
    request: http::Request<Body>,
    handler: impl FnOnce(&Req) -> Result<Resp, Status>,
) -> http::Response<Body>
where
    Req: Message + Default,
    Resp: Message,
{
    let answer = async {
        let message = request_message(request.into_body()).await?;
        Encoded::message(&handler(&message)?)
    };
    match answer.await {
        Ok(reply) => response(FrameBody::single_response(reply)),
        Err(status) => status.into_http(),
    }
}

/// The answer to a method this server does not have.
pub fn unimplemented(path: &str) -> http::Response<Body> {
    Status::unimplemented(format!("this server has no method {path}")).into_http()
}

//! The client end of a hand-framed call.

use http::header::{CONTENT_TYPE, TE};
use http::{Method, StatusCode};
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Service, ServiceExt};

use super::{FrameBody, GRPC_CONTENT_TYPE, MessageReader};

/// An error of the layer that carries calls.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Calls `path` (e.g. `/farm.v1.JobService/SubmitJob`) on `service` with
/// `request` as the request's messages; the response's messages are read
/// from the returned reader. A call the server refused at once (a
/// trailers-only response) is its status.
pub async fn open<S>(
    service: S,
    path: &'static str,
    request: FrameBody,
) -> Result<MessageReader<Body>, Status>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Error: Into<BoxError>,
{
    let request = http::Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(CONTENT_TYPE, GRPC_CONTENT_TYPE)
        .header(TE, "trailers")
        .body(Body::new(request))
        .map_err(|e| Status::internal(format!("cannot build a request for {path}: {e}")))?;
    let response = service
        .oneshot(request)
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    let (parts, body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&parts.headers) {
        if status.code() != Code::Ok {
            return Err(status);
        }
        return Ok(MessageReader::ended(body, Ok(())));
    }
    if parts.status != StatusCode::OK {
        return Err(status_of_http(parts.status));
    }
    Ok(MessageReader::new(body))
}

/// The gRPC status an HTTP error stands for, as gRPC's own mapping has it
/// (doc/http-grpc-status-mapping.md).
fn status_of_http(status: StatusCode) -> Status {
    let code = match status {
        StatusCode::BAD_REQUEST => Code::Internal,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::Unimplemented,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(
        code,
        format!(
            "grpc-status header missing, mapped from HTTP status code {}",
            status.as_u16()
        ),
    )
}

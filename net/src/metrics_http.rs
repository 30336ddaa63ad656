//! The plain-HTTP endpoint a process serves its metrics on: `GET /metrics`
//! answers what `render` writes (Prometheus' OpenMetrics text), anything
//! else 404 or 405. Kept apart from the gRPC port so a scraper needs no
//! HTTP/2 and a metrics port can stay on loopback while gRPC does not.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The content type of the OpenMetrics text format, which Prometheus
/// asks for first.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Scrapers served at once; more connections are closed at once. A scrape
/// takes a fraction of a millisecond, so a few slots are plenty.
const MAX_CONNECTIONS: usize = 16;

/// A request's headers must arrive within this, and an idle kept-alive
/// connection is closed after it.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest one connection is served, however busy.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// How long to wait before accepting again after `accept` failed (e.g. out
/// of file descriptors), so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Serves `GET /metrics` on `listener` until `stop` is cancelled, then
/// drops every open connection and returns.
pub async fn serve<F>(listener: TcpListener, render: F, stop: CancellationToken)
where
    F: Fn() -> String + Send + Sync + 'static,
{
    let render = Arc::new(render);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "metrics endpoint: accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let render = render.clone();
        connections.spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(&request, render.as_ref());
                async move { Ok::<_, Infallible>(response) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            // A scraper that hangs up or dawdles is no error of ours.
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
    connections.shutdown().await;
}

fn respond<B>(request: &Request<B>, render: &dyn Fn() -> String) -> Response<Full<Bytes>> {
    let (status, content_type, body) = if request.uri().path() != "/metrics" {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try GET /metrics\n".to_owned(),
        )
    } else if request.method() != Method::GET {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".to_owned(),
        )
    } else {
        (StatusCode::OK, CONTENT_TYPE, render())
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, method: Method) -> Response<Full<Bytes>> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .expect("a valid request");
        respond(&request, &|| "farm_up 1\n# EOF\n".to_owned())
    }

    #[test]
    fn serves_metrics_and_nothing_else() {
        let ok = get("/metrics", Method::GET);
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        assert_eq!(get("/", Method::GET).status(), StatusCode::NOT_FOUND);
        assert_eq!(
            get("/metricsx", Method::GET).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get("/metrics", Method::POST).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn answers_over_tcp_and_stops_when_told() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            || "farm_up 1\n# EOF\n".to_owned(),
            stop.clone(),
        ));

        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
            .await
            .expect("answered in time")
            .expect("read");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nfarm_up 1\n# EOF\n"), "{answer}");

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("stopped in time")
            .expect("no panic");
    }
}

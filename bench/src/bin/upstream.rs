//! The upstream for gateway benchmarks: answers every request with a small
//! JSON body, on one thread. `upstream ADDR`
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;

async fn answer() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"ok":true}"#,
    )
}

fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18799".into());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let l = tokio::net::TcpListener::bind(&addr).await?;
            println!("upstream listening on http://{}", l.local_addr()?);
            axum::serve(l, Router::new().fallback(answer)).await?;
            Ok(())
        })
}

//! The operator console as `writ serve` serves it: the banner names it,
//! `--no-console` turns it (and its cookie) off.

use crate::harness::{ADMIN, Broker, Opts};

#[tokio::test]
async fn serve_dev_names_the_console_and_serves_it_with_its_csp() {
    let b = Broker::start();
    let url = format!("{}/ui/", b.addr);
    let out = b.stdout();
    assert!(
        out.iter().any(|l| l == &format!("console at {url}")),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|l| l.contains("Or open the operator console at")),
        "{out:?}"
    );
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    // Sign in with the dev admin credential: a cookie, and it works on /v1.
    let c = reqwest::Client::new();
    let r = c
        .post(b.url("/ui/api/session"))
        .json(&serde_json::json!({ "credential": ADMIN }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    let pair = cookie.split(';').next().unwrap().to_owned();
    let r = c
        .get(b.url("/v1/agents"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn no_console_serves_no_console() {
    let mut opts = Opts::default();
    opts.extra.push("--no-console".into());
    let b = Broker::start_with(opts);
    // No console line in the banner (the binary's path, which the banner
    // shows, may have "console" in it).
    assert!(
        !b.stdout()
            .iter()
            .any(|l| l.contains("console at") || l.contains("/ui/")),
        "{:?}",
        b.stdout()
    );
    for path in ["/ui/", "/ui/app.js", "/ui/api/session"] {
        let r = reqwest::get(b.url(path)).await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
}

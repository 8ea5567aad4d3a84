//! The audit archive: old records leave the database for signed segments
//! that verify offline, still read through the API, and refuse an edit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{Broker, Opts, eventually, json, stdout};

fn opts() -> Opts {
    let mut o = Opts::default();
    o.extra.extend(
        [
            "--audit-retention-secs",
            "1",
            "--audit-checkpoint-secs",
            "1",
        ]
        .map(String::from),
    );
    o
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    writ_core::archive::segment_paths(dir).unwrap()
}

/// Runs tasks until the archive holds at least `n` segments.
async fn fill(b: &Broker, n: usize) {
    let dir = b.data_dir().join("audit-archive");
    let inst = b.attest("demo-agent").await;
    let done = eventually(Duration::from_secs(60), || async {
        let t = b
            .start_task(&inst.access_token, &["tickets:read"])
            .await
            .unwrap();
        b.as_token(&inst.access_token)
            .complete(&t.task_id)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        segments(&dir).len() >= n
    })
    .await;
    assert!(done, "the archive did not reach {n} segments");
}

/// Old records move to signed segments; `GET /v1/audit` still reads them
/// from the first, `writ audit verify` walks archive and database as one
/// chain, and `writ audit verify --archive` verifies the archive offline,
/// with a key file alone, and on into the database file.
#[tokio::test]
async fn the_audit_archive_reads_back_and_verifies_offline() {
    let mut b = Broker::start_with(opts());
    fill(&b, 2).await;
    let page = b.admin().audit(0, 1000).await.unwrap();
    let seqs: Vec<u64> = page.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs.first(), Some(&1), "the archive is read for record 1");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let v = b.admin().audit_verify().await.unwrap();
    assert!(v.valid, "{v:?}");
    let keys = b.data_dir().join("keys.json");
    let out = b.cli(&["audit", "keys"]);
    assert!(out.status.success());
    std::fs::write(&keys, stdout(&out)).unwrap();
    b.stop();

    let dir = b.data_dir().join("audit-archive");
    let (dir_s, keys_s) = (dir.to_str().unwrap(), keys.to_str().unwrap());
    let out = b.cli(&["audit", "verify", "--archive", dir_s, "--keys", keys_s]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&out);
    assert_eq!(r["valid"], true);
    assert!(r["segments"].as_u64().unwrap() >= 2, "{r}");
    let db = b.data_dir().join("writ.db");
    let out = b.cli(&[
        "audit",
        "verify",
        "--archive",
        dir_s,
        "--keys",
        keys_s,
        "--database",
        db.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&out);
    assert!(r["records"].as_u64().unwrap() > r["archived_records"].as_u64().unwrap());
}

/// An archive segment edited after it was written (one record's event
/// changed) is refused offline, naming the segment and the record; so is
/// an archive with a segment removed from the middle.
#[tokio::test]
async fn an_edited_or_missing_archive_segment_is_refused() {
    let mut b = Broker::start_with(opts());
    fill(&b, 3).await;
    let keys = b.data_dir().join("keys.json");
    std::fs::write(&keys, stdout(&b.cli(&["audit", "keys"]))).unwrap();
    b.stop();
    let dir = b.data_dir().join("audit-archive");
    let (dir_s, keys_s) = (dir.to_str().unwrap(), keys.to_str().unwrap());
    let segs = segments(&dir);
    let original = std::fs::read_to_string(&segs[0]).unwrap();

    // Edit: the second record of the first segment names another actor.
    let mut lines: Vec<String> = original.lines().map(String::from).collect();
    let mut r: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    let seq = r["seq"].as_u64().unwrap();
    let event = r["event"]
        .as_str()
        .unwrap()
        .replacen("\"actor\":\"", "\"actor\":\"x", 1);
    assert_ne!(event, r["event"].as_str().unwrap(), "nothing edited");
    r["event"] = event.into();
    lines[2] = r.to_string();
    std::fs::write(&segs[0], lines.join("\n") + "\n").unwrap();
    let out = b.cli(&["audit", "verify", "--archive", dir_s, "--keys", keys_s]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    let name = segs[0].file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name), "{err}");
    assert!(err.contains(&format!("record {seq}")), "{err}");
    assert_eq!(json(&out)["valid"], false);

    // Restored, it verifies again; without the middle segment it does not.
    std::fs::write(&segs[0], &original).unwrap();
    let out = b.cli(&["audit", "verify", "--archive", dir_s, "--keys", keys_s]);
    assert_eq!(out.status.code(), Some(0));
    std::fs::remove_file(&segs[1]).unwrap();
    let out = b.cli(&["audit", "verify", "--archive", dir_s, "--keys", keys_s]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    let next = segs[2].file_name().unwrap().to_str().unwrap();
    assert!(err.contains(next), "{err}");
}

/// A webhook receiver that refuses (503) until `open` is set, then takes
/// every batch (204).
async fn gated_receiver() -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let open = std::sync::Arc::new(AtomicBool::new(false));
    let o = std::sync::Arc::clone(&open);
    let app = axum::Router::new().route(
        "/in",
        axum::routing::post(move || {
            let o = std::sync::Arc::clone(&o);
            async move {
                if o.load(Ordering::SeqCst) {
                    axum::http::StatusCode::NO_CONTENT
                } else {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/in", l.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (url, open)
}

/// The lowest audit record in the database file (read-only, beside the
/// running broker).
fn first_in_database(b: &Broker) -> i64 {
    let c = rusqlite::Connection::open_with_flags(
        b.data_dir().join("writ.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    c.query_row("SELECT MIN(seq) FROM audit", [], |r| r.get(0))
        .unwrap()
}

/// Retention never drops an audit record a sink has not acknowledged:
/// while the sink refuses every delivery, records far past the retention
/// stay in the database and nothing is archived; once it takes them, the
/// archive follows, never past what it acknowledged.
#[tokio::test]
async fn audit_retention_never_drops_a_record_a_sink_has_not_acknowledged() {
    let (url, open) = gated_receiver().await;
    let cfg = tempfile::tempdir().unwrap();
    let file = cfg.path().join("writ.toml");
    std::fs::write(
        &file,
        format!(
            "[[sink]]\nname = \"siem\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"e2e-sink-secret-0123456789\"\n"
        ),
    )
    .unwrap();
    let mut o = opts();
    o.extra
        .extend(["--config".to_owned(), file.display().to_string()]);
    let b = Broker::start_with(o);
    let dir = b.data_dir().join("audit-archive");
    let inst = b.attest("demo-agent").await;
    for _ in 0..15 {
        let t = b
            .start_task(&inst.access_token, &["tickets:read"])
            .await
            .unwrap();
        b.as_token(&inst.access_token)
            .complete(&t.task_id)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        segments(&dir).is_empty(),
        "archived what the sink never took"
    );
    assert_eq!(first_in_database(&b), 1);

    open.store(true, std::sync::atomic::Ordering::SeqCst);
    fill(&b, 1).await;
    let acked = b.admin().sinks().await.unwrap()[0].cursor;
    let archived: u64 = segments(&dir)
        .iter()
        .filter_map(|p| writ_core::archive::segment_range(p.file_name()?.to_str()?))
        .map(|(_, last)| last)
        .max()
        .unwrap();
    assert!(
        archived <= acked,
        "archived {archived}, the sink acknowledged {acked}"
    );
    assert_eq!(first_in_database(&b), archived as i64 + 1);
}

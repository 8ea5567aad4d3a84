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

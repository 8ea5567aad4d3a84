//! Audit sinks: cursors that survive, one deliverer per sink, and the
//! floor audit retention must respect.

use super::*;

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| (*s).to_owned()).collect()
}

/// A sink's cursor moves only with its lease holder's acknowledgements,
/// never back, and a new sink starts before the first record.
pub async fn sink_cursor_advances_only_by_its_holder(s: Arc<dyn Store>) {
    s.configure_sinks(&names(&["hook", "syslog"]), at(0))
        .await
        .unwrap();
    assert_eq!(
        s.claim_sink("hook", "r1", at(0), at(15)).await.unwrap(),
        Some(0)
    );
    // Another replica waits while the lease lasts ...
    assert_eq!(
        s.claim_sink("hook", "r2", at(1), at(16)).await.unwrap(),
        None
    );
    assert!(!s.ack_sink("hook", "r2", 5, at(1)).await.unwrap());
    assert!(s.ack_sink("hook", "r1", 5, at(1)).await.unwrap());
    // ... never moves it back ...
    assert!(s.ack_sink("hook", "r1", 3, at(2)).await.unwrap());
    s.sink_failed("hook", "r1", "connection refused", at(3))
        .await
        .unwrap();
    let st = s.sinks().await.unwrap();
    assert_eq!(st.len(), 2);
    assert_eq!(st[0].name, "hook");
    assert_eq!(st[0].acked, 5);
    assert_eq!(st[0].holder.as_deref(), Some("r1"));
    assert_eq!(st[0].last_error.as_deref(), Some("connection refused"));
    assert_eq!(st[1].acked, 0);
    // ... and takes over once the lease has lapsed, from the cursor.
    assert_eq!(
        s.claim_sink("hook", "r2", at(15), at(30)).await.unwrap(),
        Some(5)
    );
    assert!(!s.ack_sink("hook", "r1", 9, at(16)).await.unwrap());
    assert!(s.ack_sink("hook", "r2", 9, at(16)).await.unwrap());
    assert_eq!(s.sinks().await.unwrap()[0].last_error, None);
    // Released, it is free at once.
    s.release_sink("hook", "r2").await.unwrap();
    assert_eq!(
        s.claim_sink("hook", "r1", at(17), at(32)).await.unwrap(),
        Some(9)
    );
    // Reconfiguring keeps the cursors of the sinks still named, forgets
    // the others; an unknown sink cannot be claimed.
    s.configure_sinks(&names(&["hook"]), at(20)).await.unwrap();
    let st = s.sinks().await.unwrap();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].acked, 9);
    assert_eq!(
        s.claim_sink("syslog", "r1", at(20), at(35)).await.unwrap(),
        None
    );
}

/// However many replicas race for a free sink, one holds it.
pub async fn sink_lease_has_one_holder_under_race(s: Arc<dyn Store>) {
    s.configure_sinks(&names(&["hook"]), at(0)).await.unwrap();
    let mut joins = Vec::new();
    for i in 0..16 {
        let s = Arc::clone(&s);
        joins.push(tokio::spawn(async move {
            s.claim_sink("hook", &format!("r{i}"), at(1), at(16))
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for j in joins {
        if j.await.unwrap().is_some() {
            won += 1;
        }
    }
    assert_eq!(won, 1);
}

/// The floor is the lowest record some sink has not acknowledged: what
/// audit retention must never go past. Without sinks there is none.
pub async fn audit_sink_floor_is_the_lowest_unacknowledged(s: Arc<dyn Store>) {
    assert_eq!(s.audit_sink_floor().await.unwrap(), None);
    s.configure_sinks(&names(&["a", "b"]), at(0)).await.unwrap();
    assert_eq!(s.audit_sink_floor().await.unwrap(), Some(1));
    s.claim_sink("a", "r", at(0), at(15)).await.unwrap();
    s.claim_sink("b", "r", at(0), at(15)).await.unwrap();
    assert!(s.ack_sink("a", "r", 40, at(1)).await.unwrap());
    assert!(s.ack_sink("b", "r", 12, at(1)).await.unwrap());
    assert_eq!(s.audit_sink_floor().await.unwrap(), Some(13));
    assert!(s.ack_sink("b", "r", 50, at(2)).await.unwrap());
    assert_eq!(s.audit_sink_floor().await.unwrap(), Some(41));
    // A sink dropped from the configuration holds nothing back.
    s.configure_sinks(&names(&["b"]), at(3)).await.unwrap();
    assert_eq!(s.audit_sink_floor().await.unwrap(), Some(51));
    s.configure_sinks(&[], at(4)).await.unwrap();
    assert_eq!(s.audit_sink_floor().await.unwrap(), None);
}

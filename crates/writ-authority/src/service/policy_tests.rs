//! The policy directory's test cases (`tests.toml`, the file `writ policy
//! test` reads), run by the broker against the live and the shadow set
//! whenever either changes (or the cases do), so the console shows
//! whether the sets deciding now pass them.

use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;

use writ_core::{Clock, Timestamp};
use writ_policy::PolicySet;
use writ_policy::cases::{CaseFile, SetResults, TESTS_FILE};

use super::policies::Policies;
use crate::config::BrokerConfig;

/// What the cases gave, and on which sets.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestReport {
    /// Where the cases were read (`None`: there are none).
    pub file: Option<String>,
    /// Why the cases could not be read, if they could not.
    pub error: Option<String>,
    pub live: Option<SetResults>,
    pub shadow: Option<SetResults>,
    /// When they ran (the sets or the cases last changed).
    pub ran_at: Timestamp,
    #[serde(skip)]
    key: Key,
}

/// What a report was made from: the cases' text, the live and shadow
/// versions.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    cases: Option<u64>,
    live: String,
    shadow: Option<String>,
}

/// Runs the cases when what they test changes; keeps the last report.
pub struct PolicyTests {
    config: Arc<BrokerConfig>,
    policies: Arc<Policies>,
    clock: Arc<dyn Clock>,
    last: tokio::sync::Mutex<Option<Arc<TestReport>>>,
}

impl PolicyTests {
    pub(super) fn new(h: &super::Handles) -> Self {
        Self {
            config: Arc::clone(&h.config),
            policies: Arc::clone(&h.policies),
            clock: Arc::clone(&h.clock),
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Where the cases come from and their text: the policy directory's
    /// `tests.toml`, else the cases the broker was started with (`--dev`'s
    /// examples). `Err`: the file is there but cannot be read.
    async fn cases_text(&self) -> (Option<String>, Result<Option<String>, String>) {
        let Some(dir) = self.config.policy_dir.clone() else {
            let text = self.config.policy_tests.clone();
            return (
                text.as_ref().map(|_| "embedded tests.toml".to_owned()),
                Ok(text),
            );
        };
        let path = dir.join(TESTS_FILE);
        let name = path.display().to_string();
        let read = tokio::task::spawn_blocking(move || {
            match std::fs::metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.to_string()),
                Ok(m) if m.len() > writ_policy::cases::MAX_CASES_BYTES => {
                    return Err(format!(
                        "larger than {} bytes",
                        writ_policy::cases::MAX_CASES_BYTES
                    ));
                }
                Ok(_) => {}
            }
            std::fs::read_to_string(&path)
                .map(Some)
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match read {
            Ok(None) => (None, Ok(None)),
            other => (Some(name), other),
        }
    }

    /// The cases' results on the sets deciding now: run again when the
    /// live or shadow set or the cases changed since the last run.
    pub async fn results(&self) -> Arc<TestReport> {
        let (file, text) = self.cases_text().await;
        let live = self.policies.live();
        let shadow = self.policies.shadow();
        let key = Key {
            cases: match &text {
                Ok(Some(t)) => Some(digest(t)),
                Ok(None) => None,
                Err(e) => Some(digest(e)),
            },
            live: live.version().to_owned(),
            shadow: shadow.as_ref().map(|s| s.version().to_owned()),
        };
        let mut last = self.last.lock().await;
        if let Some(r) = last.as_ref().filter(|r| r.key == key) {
            return Arc::clone(r);
        }
        let ran_at = self.clock.now();
        let report = tokio::task::spawn_blocking(move || run(file, text, &live, shadow.as_deref()))
            .await
            .unwrap_or_else(|e| Ran {
                error: Some(format!("the policy tests did not finish: {e}")),
                ..Ran::default()
            });
        log(&report);
        let report = Arc::new(TestReport {
            file: report.file,
            error: report.error,
            live: report.live,
            shadow: report.shadow,
            ran_at,
            key,
        });
        *last = Some(Arc::clone(&report));
        report
    }
}

#[derive(Default)]
struct Ran {
    file: Option<String>,
    error: Option<String>,
    live: Option<SetResults>,
    shadow: Option<SetResults>,
}

fn run(
    file: Option<String>,
    text: Result<Option<String>, String>,
    live: &PolicySet,
    shadow: Option<&PolicySet>,
) -> Ran {
    let name = file.clone().unwrap_or_else(|| TESTS_FILE.to_owned());
    let cases = match text {
        Ok(None) => return Ran::default(),
        Ok(Some(t)) => CaseFile::parse(&name, &t).map_err(|e| e.to_string()),
        Err(e) => Err(format!("reading {name}: {e}")),
    };
    match cases {
        Ok(c) => Ran {
            file,
            error: None,
            live: Some(c.run(live)),
            shadow: shadow.map(|s| c.run(s)),
        },
        Err(error) => Ran {
            file,
            error: Some(error),
            ..Ran::default()
        },
    }
}

fn log(r: &Ran) {
    if let Some(e) = &r.error {
        tracing::warn!(error = %e, "the policy tests cannot be read");
    }
    for (set, res) in [("live", &r.live), ("shadow", &r.shadow)] {
        if let Some(res) = res {
            if res.failed > 0 {
                tracing::warn!(set, version = %res.version, passed = res.passed, failed = res.failed, "policy tests fail");
            } else {
                tracing::info!(set, version = %res.version, passed = res.passed, "policy tests pass");
            }
        }
    }
}

fn digest(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

//! Audit sinks (`/v1/sinks`).

use writ_core::api::{SinkInfo, SinkTested};

use crate::{Client, ClientError, Result};

impl Client {
    /// Every configured audit sink with its cursor and lag (auditor).
    pub async fn sinks(&self) -> Result<Vec<SinkInfo>> {
        self.get("/v1/sinks").await
    }

    /// Sends one test event through the sink `name` (admin).
    pub async fn test_sink(&self, name: &str) -> Result<SinkTested> {
        // The name as one path segment, escaped.
        let bad = || ClientError::Address(name.to_owned());
        let mut u = reqwest::Url::parse("writ:/v1/sinks").map_err(|_| bad())?;
        u.path_segments_mut()
            .map_err(|()| bad())?
            .push(name)
            .push("test");
        self.post_empty(u.path()).await
    }
}

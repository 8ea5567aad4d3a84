//! Deployable writ: TLS on every listener (checked with curl, a TLS client
//! that is not ours), certificates rotated without a restart, PostgreSQL
//! over verified TLS, plaintext refused where others can listen, and rate
//! limits that answer 429 with Retry-After.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData as _, SanType,
};

use super::harness::{BIN, Broker, Opts, stdout};

/// A test CA that issues server certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names`: (chain PEM, key PEM, curl's pin of
    /// its public key).
    fn server(&self, names: &[&str]) -> (String, String, String) {
        let params =
            CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let spki =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &key.subject_public_key_info());
        let pin = format!(
            "sha256//{}",
            base64::engine::general_purpose::STANDARD.encode(spki.as_ref())
        );
        (cert.pem(), key.serialize_pem(), pin)
    }
}

impl Ca {
    /// A client certificate (chain PEM, key PEM).
    fn client(&self, name: &str) -> (String, String) {
        self.client_with(name, &[])
    }

    /// A client certificate with these URI SANs (chain PEM, key PEM).
    fn client_with(&self, name: &str, uris: &[&str]) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().unwrap()))
            .collect();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Replaces a file the way cert-manager and ACME clients do: a new file
/// renamed over the old one.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is installed")
}

fn ok(o: &Output) -> bool {
    o.status.success()
}

fn text(o: &Output) -> String {
    format!(
        "status={:?} stdout={} stderr={}",
        o.status.code(),
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The host:port of a URL.
fn authority(url: &str) -> &str {
    url.split("://").nth(1).unwrap().trim_end_matches('/')
}

/// Waits until curl, pinned to `pin`, reaches `url` (the listener serves
/// the certificate behind that key).
fn serves(url: &str, ca: &Path, pin: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let o = curl(&[
            "--cacert",
            ca.to_str().unwrap(),
            "--pinnedpubkey",
            pin,
            "-o",
            "/dev/null",
            &format!("{url}/healthz"),
        ]);
        if ok(&o) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Waits until the gateway at `gw` says it is ready.
fn ready(gw: &str, ca: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let o = curl(&["--cacert", ca, &format!("{gw}/healthz")]);
        if stdout(&o).contains("\"ready\":true") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Points `localhost` URLs at the listener (the certificate names
/// `localhost`; the listener reports 127.0.0.1).
fn local(url: &str) -> String {
    url.replace("127.0.0.1", "localhost")
}

#[test]
fn tls_only_listeners_rotate_certificates_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new("writ e2e test CA");
    let ca_file = write(tmp.path(), "ca.pem", &ca.pem);
    let (cert, key, pin1) = ca.server(&["localhost"]);
    let (gcert, gkey, gpin1) = ca.server(&["localhost"]);
    let cert_file = write(tmp.path(), "broker.crt", &cert);
    let key_file = write(tmp.path(), "broker.key", &key);
    let gcert_file = write(tmp.path(), "gateway.crt", &gcert);
    let gkey_file = write(tmp.path(), "gateway.key", &gkey);
    let p = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let broker = Broker::start_with(Opts {
        extra: vec![
            "--tls-cert".into(),
            p(&cert_file),
            "--tls-key".into(),
            p(&key_file),
            "--gateway-tls-cert".into(),
            p(&gcert_file),
            "--gateway-tls-key".into(),
            p(&gkey_file),
            "--limit-attest-per-minute".into(),
            "3".into(),
            "--limit-anonymous-per-minute".into(),
            "12".into(),
        ],
        ..Opts::default()
    });
    assert!(broker.addr.starts_with("https://"), "{}", broker.addr);
    assert!(broker.gateway.starts_with("https://"), "{}", broker.gateway);
    let (api, gw) = (local(&broker.addr), local(&broker.gateway));
    let ca_arg = ca_file.to_str().unwrap();

    // Both listeners speak TLS, with the certificates given, to a client
    // that trusts the test CA; the embedded gateway reached the broker
    // over TLS too (it is ready: it has the bundle and the revocations).
    assert!(serves(&api, &ca_file, &pin1));
    assert!(serves(&gw, &ca_file, &gpin1));
    assert!(ready(&gw, ca_arg), "the embedded gateway is not ready");

    // Nothing in plaintext, nothing below TLS 1.2, no unknown CA.
    let plain = format!("http://{}/healthz", authority(&api));
    let o = curl(&["-o", "/dev/null", "-w", "%{http_code}", &plain]);
    assert!(!ok(&o) || stdout(&o) != "200", "{}", text(&o));
    let o = curl(&[
        "--cacert",
        ca_arg,
        "--tlsv1.1",
        "--tls-max",
        "1.1",
        &format!("{api}/healthz"),
    ]);
    assert!(!ok(&o), "TLS 1.1 was accepted: {}", text(&o));
    let o = curl(&[&format!("{api}/healthz")]);
    assert!(
        !ok(&o),
        "a certificate from an unknown CA was trusted: {}",
        text(&o)
    );

    // The CLI trusts the CA it is given (--ca-file / WRIT_CA_FILE), and
    // only then.
    let o = broker.cli_env(&["agent", "list"], &[("WRIT_ADDR", &api)]);
    assert!(!o.status.success(), "{}", text(&o));
    let o = broker.cli_env(
        &["agent", "list"],
        &[("WRIT_ADDR", &api), ("WRIT_CA_FILE", ca_arg)],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(stdout(&o).contains("demo-agent"), "{}", text(&o));

    // Rotation: new keys and certificates land in the files; the same
    // process serves them.
    let (cert2, key2, pin2) = ca.server(&["localhost"]);
    let (gcert2, gkey2, gpin2) = ca.server(&["localhost"]);
    replace(&key_file, &key2);
    replace(&cert_file, &cert2);
    replace(&gkey_file, &gkey2);
    replace(&gcert_file, &gcert2);
    assert!(
        serves(&api, &ca_file, &pin2),
        "the broker kept its old certificate"
    );
    assert!(
        serves(&gw, &ca_file, &gpin2),
        "the gateway kept its old certificate"
    );
    let o = curl(&[
        "--cacert",
        ca_arg,
        "--pinnedpubkey",
        &pin1,
        &format!("{api}/healthz"),
    ]);
    assert!(!ok(&o), "the old certificate is still served");
    // The embedded gateway follows the broker's new certificate.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(ready(&gw, ca_arg), "the embedded gateway lost the broker");

    // A rate limit: unauthenticated attestation, 3 a minute here.
    let mut codes = Vec::new();
    let mut retry_after = None;
    for _ in 0..5 {
        let o = curl(&[
            "--cacert",
            ca_arg,
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"agent":"demo-agent","join_token":"nope"}"#,
            &format!("{api}/v1/attest"),
        ]);
        let head = stdout(&o);
        let status = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        if status == "429" {
            retry_after = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("retry-after:")
                    .map(|v| v.trim().to_owned())
            });
        }
        codes.push(status);
    }
    assert_eq!(codes.iter().filter(|c| *c == "429").count(), 2, "{codes:?}");
    let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");

    // Requests without a credential: 12 a minute from one client here
    // (the 5 attestations above took 5 of them).
    let mut limited = None;
    for i in 0..12 {
        let o = curl(&[
            "--cacert",
            ca_arg,
            "-D",
            "-",
            &format!("{api}/.well-known/jwks.json"),
        ]);
        let out = stdout(&o);
        if out.starts_with("HTTP/1.1 429") {
            limited = Some((i, out));
            break;
        }
    }
    let (i, out) = limited.expect("no 429 for requests without a credential");
    assert_eq!(i, 7, "{out}");
    assert!(out.to_ascii_lowercase().contains("retry-after: "), "{out}");
    assert!(out.contains("application/problem+json"), "{out}");
    // A credential has its own allowance.
    let o = broker.cli_env(
        &["agent", "list"],
        &[("WRIT_ADDR", &api), ("WRIT_CA_FILE", ca_arg)],
    );
    assert!(o.status.success(), "{}", text(&o));
    // Both kinds of refusal are counted.
    let o = curl(&[
        "--cacert",
        ca_arg,
        "-H",
        "authorization: Bearer e2e-admin-token",
        &format!("{api}/metrics"),
    ]);
    let metrics = stdout(&o);
    assert!(
        metrics.contains("writ_attestations_total{outcome=\"rate_limited\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("writ_http_rate_limited_total{limit=\"anonymous\"} 1"),
        "{metrics}"
    );
}

#[test]
fn plaintext_on_an_address_others_can_reach_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(tmp.path())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .unwrap()
    };
    for args in [
        &["--listen", "0.0.0.0:0", "--dev"][..],
        &[
            "--listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "0.0.0.0:0",
            "--dev",
        ][..],
    ] {
        let o = run(args);
        assert!(!o.status.success(), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("refusing to listen in plaintext"), "{err}");
        assert!(err.contains("--insecure-plaintext"), "{err}");
        assert!(err.contains("--tls-cert"), "{err}");
    }
    // The standalone gateway holds to the same rule.
    let o = Command::new(BIN)
        .args(["gateway", "--listen", "0.0.0.0:0"])
        .env_clear()
        .env("WRIT_GATEWAY_TOKEN", "x")
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("refusing to listen in plaintext"),
        "{}",
        text(&o)
    );
}

/// A PostgreSQL server of this test's own, with TLS on (its certificate
/// from the test CA, for `localhost` only). Stopped on drop.
struct TlsPostgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl TlsPostgres {
    fn start(ca: &Ca) -> Option<Self> {
        if std::env::var_os("WRIT_TEST_POSTGRES").is_none() {
            assert!(
                std::env::var_os("CI").is_none(),
                "WRIT_TEST_POSTGRES is not set: CI must run the PostgreSQL tests"
            );
            eprintln!(
                "skipped: WRIT_TEST_POSTGRES is not set (scripts/postgres.sh starts a server)"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ssl = dir.path().join("ssl");
        std::fs::create_dir(&ssl).unwrap();
        let (cert, key, _) = ca.server(&["localhost"]);
        write(&ssl, "server.crt", &cert);
        write(&ssl, "server.key", &key);
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let pg = Self { dir, port };
        let o = pg.script(&[]);
        assert!(o.status.success(), "{}", text(&o));
        Some(pg)
    }

    fn script(&self, args: &[&str]) -> Output {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres.sh");
        Command::new(root)
            .args(args)
            .env("WRIT_PG_DIR", self.dir.path().join("cluster"))
            .env("WRIT_PG_PORT", self.port.to_string())
            .env("WRIT_PG_SSL_DIR", self.dir.path().join("ssl"))
            .output()
            .unwrap()
    }

    fn url(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://writ:writ-test@{host}:{}/postgres{query}",
            self.port
        )
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = self.script(&["stop"]);
    }
}

#[test]
fn the_store_reaches_postgresql_over_verified_tls() {
    let ca = Ca::new("writ e2e postgres CA");
    let Some(pg) = TlsPostgres::start(&ca) else {
        return;
    };
    let ca_file = write(pg.dir.path(), "ca.pem", &ca.pem);
    let ca_q = ca_file.to_str().unwrap();
    let verify_full = format!("?sslmode=verify-full&sslrootcert={ca_q}");

    // The right CA and the name in the certificate: writ runs, every
    // connection it holds is encrypted.
    let broker = Broker::start_with(Opts {
        extra: vec!["--store".into(), pg.url("localhost", &verify_full)],
        ..Opts::default()
    });
    let o = broker.cli(&["agent", "list"]);
    assert!(o.status.success(), "{}", text(&o));
    let mut c = postgres::Client::connect(&pg.url("127.0.0.1", ""), postgres::NoTls).unwrap();
    let rows = c
        .query(
            "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'writ'",
            &[],
        )
        .unwrap();
    assert!(!rows.is_empty(), "writ holds no connection");
    for r in &rows {
        let ssl: bool = r.get(0);
        let version: Option<String> = r.get(1);
        assert!(ssl, "a connection of writ's is in plaintext");
        assert!(
            matches!(version.as_deref(), Some("TLSv1.2" | "TLSv1.3")),
            "{version:?}"
        );
    }
    drop(broker);

    // A server whose certificate does not chain to the given CA, or does
    // not name the host: writ does not start.
    let other = Ca::new("someone else");
    let other_file = write(pg.dir.path(), "other.pem", &other.pem);
    for url in [
        pg.url(
            "localhost",
            &format!(
                "?sslmode=verify-full&sslrootcert={}",
                other_file.to_str().unwrap()
            ),
        ),
        pg.url("127.0.0.1", &verify_full),
        // A verifying mode with nothing to verify against.
        pg.url("localhost", "?sslmode=verify-full"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let o = Command::new(BIN)
            .args([
                "serve",
                "--no-gateway",
                "--listen",
                "127.0.0.1:0",
                "--store",
                &url,
            ])
            .arg("--data-dir")
            .arg(tmp.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .unwrap();
        assert!(!o.status.success(), "{url}: {}", text(&o));
    }
}

/// The shipped systemd unit, pointed at the built binary, passes
/// `systemd-analyze verify` without a word, and its exposure score (of
/// `systemd-analyze security`) stays low.
#[test]
fn the_systemd_unit_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/systemd/writ.service");
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    assert!(unit_text.contains("ExecStart=/usr/local/bin/writ serve"));
    let tmp = tempfile::tempdir().unwrap();
    let ours = write(
        tmp.path(),
        "writ.service",
        &unit_text.replace("ExecStart=/usr/local/bin/writ", &format!("ExecStart={BIN}")),
    );
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&ours)
        .output()
        .expect(
            "systemd-analyze is installed (Debian package systemd; scripts/test.sh installs it)",
        );
    assert!(o.status.success(), "{}", text(&o));
    assert!(o.stderr.is_empty(), "warnings: {}", text(&o));
    // A unit that names a missing binary fails: the check is real.
    let bad = write(
        tmp.path(),
        "writ-bad.service",
        &unit_text.replace(
            "ExecStart=/usr/local/bin/writ",
            "ExecStart=/nonexistent/writ",
        ),
    );
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));

    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&ours)
        .output()
        .unwrap();
    let out = stdout(&o);
    let score: f64 = out
        .split("Overall exposure level for writ.service:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level: {}", text(&o)));
    assert!(score <= 2.0, "exposure {score}: {out}");
}

/// Shell completions and manual pages come from the CLI's definition.
#[test]
fn completions_and_manual_pages_generate() {
    for shell in ["bash", "zsh", "fish"] {
        let o = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(o.status.success(), "{shell}: {}", text(&o));
        let script = stdout(&o);
        assert!(
            script.contains("serve") && script.contains("--tls-cert"),
            "{shell}"
        );
        if shell == "bash" {
            // bash itself parses it.
            let tmp = tempfile::tempdir().unwrap();
            let f = write(tmp.path(), "writ.bash", &script);
            let o = Command::new("bash").arg("-n").arg(&f).output().unwrap();
            assert!(o.status.success(), "{}", text(&o));
        }
    }
    let o = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!o.status.success());

    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .args(["man", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let serve = std::fs::read_to_string(tmp.path().join("writ-serve.1")).unwrap();
    assert!(serve.contains(".TH writ-serve 1"), "{serve}");
    assert!(serve.contains("tls\\-cert"), "{serve}");
    assert!(tmp.path().join("writ.1").exists());
    assert!(tmp.path().join("writ-completions.1").exists());
}

/// Lists print as a table when asked (the default on a terminal) and as
/// JSON when piped.
#[test]
fn lists_print_as_tables_for_people_and_json_for_scripts() {
    let b = Broker::start();
    let o = b.cli(&["agent", "list"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["name"], "demo-agent");
    let o = b.cli(&["--output", "table", "agent", "list"]);
    let out = stdout(&o);
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("NAME "), "{out}");
    assert!(header.contains("SPIFFE_ID"), "{out}");
    assert!(lines.next().unwrap().starts_with("demo-agent "), "{out}");
    let o = b.cli_env(&["tool", "list"], &[("WRIT_OUTPUT", "table")]);
    assert!(stdout(&o).starts_with("NAME "), "{}", text(&o));
}

/// With `--tls-client-ca`, a client certificate is verified against that
/// CA: one from another CA ends the handshake; none at all is still
/// served (the endpoints decide what they need).
#[test]
fn a_client_certificate_must_come_from_the_client_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new("writ e2e server CA");
    let clients = Ca::new("writ e2e client CA");
    let stranger = Ca::new("someone else");
    let (cert, key, _) = ca.server(&["localhost"]);
    let p = |name: &str, text: &str| write(tmp.path(), name, text).to_str().unwrap().to_owned();
    let ca_file = p("ca.pem", &ca.pem);
    let broker = Broker::start_with(Opts {
        extra: vec![
            "--tls-cert".into(),
            p("s.crt", &cert),
            "--tls-key".into(),
            p("s.key", &key),
            "--tls-client-ca".into(),
            p("clients.pem", &clients.pem),
            "--no-gateway".into(),
        ],
        ..Opts::default()
    });
    let url = format!("{}/healthz", local(&broker.addr));
    let (good, good_key) = clients.client("gateway-1");
    let (bad, bad_key) = stranger.client("gateway-1");
    let with = |c: &str, k: &str| {
        curl(&[
            "--cacert",
            &ca_file,
            "--cert",
            &p("c.crt", c),
            "--key",
            &p("c.key", k),
            &url,
        ])
    };
    let o = with(&good, &good_key);
    assert!(ok(&o), "{}", text(&o));
    let o = with(&bad, &bad_key);
    assert!(
        !ok(&o),
        "a certificate from another CA was accepted: {}",
        text(&o)
    );
    let o = curl(&["--cacert", &ca_file, &url]);
    assert!(ok(&o), "{}", text(&o));
}

/// A client certificate from the `--tls-client-ca` authority whose URI SAN
/// is `urn:writ:gateway:NAME` (`urn:writ:node:NAME`) stands in for that
/// gateway's (node's) credential, as long as it is registered and not
/// revoked (quarantined); it is nothing more
/// (no admin route), and a bearer credential, when sent, is what counts.
#[test]
fn a_client_certificate_naming_a_gateway_or_node_stands_in_for_its_credential() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new("writ e2e server CA");
    let clients = Ca::new("writ e2e client CA");
    let (cert, key, _) = ca.server(&["localhost"]);
    let p = |name: &str, text: &str| write(tmp.path(), name, text).to_str().unwrap().to_owned();
    let ca_file = p("ca.pem", &ca.pem);
    let broker = Broker::start_with(Opts {
        extra: vec![
            "--tls-cert".into(),
            p("s.crt", &cert),
            "--tls-key".into(),
            p("s.key", &key),
            "--tls-client-ca".into(),
            p("clients.pem", &clients.pem),
            "--no-gateway".into(),
        ],
        ..Opts::default()
    });
    let api = local(&broker.addr);
    let admin = format!("Authorization: Bearer {}", super::harness::ADMIN);
    let o = curl(&[
        "--cacert",
        &ca_file,
        "-H",
        &admin,
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"name":"edge-1"}"#,
        &format!("{api}/v1/gateways"),
    ]);
    assert!(ok(&o), "{}", text(&o));
    let status = |cert: Option<(&str, &str)>, path: &str, extra: &[&str]| -> String {
        let mut args: Vec<String> = vec![
            "--cacert".into(),
            ca_file.clone(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
        ];
        if let Some((c, k)) = cert {
            args.extend([
                "--cert".into(),
                p("c.crt", c),
                "--key".into(),
                p("c.key", k),
            ]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.push(format!("{api}{path}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        stdout(&curl(&args))
    };
    let (edge, edge_key) = clients.client_with("edge-1", &["urn:writ:gateway:edge-1"]);
    let (other, other_key) = clients.client_with("edge-2", &["urn:writ:gateway:edge-2"]);
    let (plain, plain_key) = clients.client("edge-1");
    let (two, two_key) = clients.client_with(
        "both",
        &["urn:writ:gateway:edge-1", "urn:writ:gateway:edge-2"],
    );

    assert_eq!(status(None, "/v1/gateway/bundle", &[]), "401");
    assert_eq!(
        status(Some((&edge, &edge_key)), "/v1/gateway/bundle", &[]),
        "200"
    );
    assert_eq!(
        status(Some((&edge, &edge_key)), "/v1/gateway/secrets", &[]),
        "200"
    );
    // Not an admin for all that.
    assert_eq!(status(Some((&edge, &edge_key)), "/v1/agents", &[]), "401");
    // A gateway nobody registered, no gateway named, two named: refused.
    assert_eq!(
        status(Some((&other, &other_key)), "/v1/gateway/bundle", &[]),
        "401"
    );
    assert_eq!(
        status(Some((&plain, &plain_key)), "/v1/gateway/bundle", &[]),
        "401"
    );
    assert_eq!(
        status(Some((&two, &two_key)), "/v1/gateway/bundle", &[]),
        "401"
    );
    // `writ gateway` itself, with that certificate and no credential,
    // gets its bundle and revocation feed over TLS: it becomes ready.
    let spool = tempfile::tempdir().unwrap();
    let mut gw = Command::new(BIN)
        .args([
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--broker",
            &api,
            "--ca-file",
            &ca_file,
        ])
        .arg("--tls-client-cert")
        .arg(p("gw.crt", &edge))
        .arg("--tls-client-key")
        .arg(p("gw.key", &edge_key))
        .arg("--spool-dir")
        .arg(spool.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WRIT_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(gw.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let gw_url = line
        .trim()
        .strip_prefix("gateway listening on ")
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let o = curl(&[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{gw_url}/healthz"),
        ]);
        if stdout(&o) == "200" {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = gw.kill();
    let _ = gw.wait();
    assert!(
        ready,
        "writ gateway with a client certificate never became ready"
    );
    // Neither a credential nor a certificate: it says what it needs.
    let o = Command::new(BIN)
        .args(["gateway", "--listen", "127.0.0.1:0", "--broker", &api])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--tls-client-cert"),
        "{}",
        text(&o)
    );
    // A bearer credential sent with it is what counts.
    assert_eq!(
        status(
            Some((&edge, &edge_key)),
            "/v1/gateway/bundle",
            &["-H", "Authorization: Bearer wgw_wrong"]
        ),
        "401"
    );
    // Revoked: the certificate stops working at once.
    let o = curl(&[
        "--cacert",
        &ca_file,
        "-H",
        &admin,
        "-X",
        "DELETE",
        &format!("{api}/v1/gateways/edge-1"),
    ]);
    assert!(ok(&o), "{}", text(&o));
    assert_eq!(
        status(Some((&edge, &edge_key)), "/v1/gateway/bundle", &[]),
        "401"
    );

    // Nodes the same: `urn:writ:node:NAME`, while the node is not quarantined.
    let o = curl(&[
        "--cacert",
        &ca_file,
        "-H",
        &admin,
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"name":"node-1"}"#,
        &format!("{api}/v1/nodes"),
    ]);
    assert!(ok(&o), "{}", text(&o));
    let (node, node_key) = clients.client_with("node-1", &["urn:writ:node:node-1"]);
    let (stranger, stranger_key) = clients.client_with("node-2", &["urn:writ:node:node-2"]);
    assert_eq!(status(None, "/v1/node/entries", &[]), "401");
    assert_eq!(
        status(Some((&node, &node_key)), "/v1/node/entries", &[]),
        "200"
    );
    assert_eq!(
        status(Some((&stranger, &stranger_key)), "/v1/node/entries", &[]),
        "401"
    );
    // A gateway's certificate is not a node's, nor a node's a gateway's.
    assert_eq!(
        status(Some((&edge, &edge_key)), "/v1/node/entries", &[]),
        "401"
    );
    assert_eq!(
        status(Some((&node, &node_key)), "/v1/gateway/bundle", &[]),
        "401"
    );
    let o = curl(&[
        "--cacert",
        &ca_file,
        "-H",
        &admin,
        "-X",
        "POST",
        &format!("{api}/v1/nodes/node-1/quarantine"),
    ]);
    assert!(ok(&o), "{}", text(&o));
    assert_eq!(
        status(Some((&node, &node_key)), "/v1/node/entries", &[]),
        "401"
    );
}

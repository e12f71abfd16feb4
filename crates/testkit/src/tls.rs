//! Throwaway TLS certificates for tests: a CA made on the spot and a server
//! certificate it signs for `localhost` and `127.0.0.1`, written as PEM files
//! by the `openssl` command line. Nothing here is fit for anything but a
//! loopback test: the keys are unencrypted and live two days.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// PEM files of a test CA and of a server certificate it signed.
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The CA certificate clients must trust.
    pub ca: PathBuf,
    /// The server's certificate (the leaf only; the CA is the trust anchor).
    pub cert: PathBuf,
    /// The server's private key (PKCS#8).
    pub key: PathBuf,
}

impl TestCerts {
    /// Makes a P-256 CA and a server certificate for `localhost` and
    /// `127.0.0.1` in `dir` (which must exist; the caller removes it).
    /// Fails with a message naming the `openssl` step that failed.
    pub fn create(dir: &Path) -> Result<TestCerts, std::io::Error> {
        let f = |name: &str| dir.join(name);
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let ca_key = f("ca.key");
        let ca = f("ca.pem");
        let key = f("server.key");
        let csr = f("server.csr");
        let cert = f("server.pem");
        let ext = f("server.ext");
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-days",
                    "2",
                    "-subj",
                    "/CN=latchkey throwaway test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
            &[("-keyout", &ca_key), ("-out", &ca)],
        )?;
        openssl(
            &[&["req"][..], &ec, &["-subj", "/CN=localhost"]].concat(),
            &[("-keyout", &key), ("-out", &csr)],
        )?;
        std::fs::write(
            &ext,
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )?;
        openssl(
            &["x509", "-req", "-days", "2", "-set_serial", "2"],
            &[
                ("-in", &csr),
                ("-CA", &ca),
                ("-CAkey", &ca_key),
                ("-extfile", &ext),
                ("-out", &cert),
            ],
        )?;
        Ok(TestCerts { ca, cert, key })
    }
}

fn openssl(args: &[&str], paths: &[(&str, &Path)]) -> Result<(), std::io::Error> {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    for (flag, path) in paths {
        cmd.arg(flag).arg(path);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| std::io::Error::new(e.kind(), format!("could not run `openssl` ({e}); the TLS tests need the openssl command line (apt-get install openssl)")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "`openssl {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    )))
}

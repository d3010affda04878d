//! SoftHSM2 tokens for the PKCS#11 signer's tests.
//!
//! `scripts/services.sh` installs SoftHSM2 (Debian's `softhsm2`) and
//! exports `SEATWARDEN_TEST_PKCS11_MODULE`, the module's path. Each
//! [`SoftHsm`] is a token directory of its own with one initialized token,
//! named to the module by the `SOFTHSM2_CONF` file it writes: processes
//! started with [`SoftHsm::env`] see that token and no other.

use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

/// The user PIN of every test token.
pub const PIN: &str = "5309-test-pin";

/// One initialized SoftHSM2 token in a directory of its own.
#[derive(Debug)]
pub struct SoftHsm {
    pub module: PathBuf,
    /// The SoftHSM2 configuration file that names the token directory.
    pub conf: PathBuf,
    pub label: String,
    pub pin: String,
    _dir: TempDir,
}

impl SoftHsm {
    /// A fresh token labelled `label`, with the user PIN [`PIN`].
    pub fn new(label: &str) -> Self {
        Self::with_pin(label, PIN)
    }

    /// A fresh token labelled `label`, with the user PIN `pin`.
    pub fn with_pin(label: &str, pin: &str) -> Self {
        let module = PathBuf::from(std::env::var("SEATWARDEN_TEST_PKCS11_MODULE").unwrap_or_else(
            |_| panic!("SEATWARDEN_TEST_PKCS11_MODULE is not set: run the suite with scripts/test.sh, which installs SoftHSM2"),
        ));
        assert!(module.exists(), "no PKCS#11 module at {}", module.display());
        let dir = tempfile::tempdir().expect("token dir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("write softhsm2.conf");
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", label])
            .args(["--pin", pin, "--so-pin", "5309-test-so-pin"])
            .output()
            .expect("run softhsm2-util");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            module,
            conf,
            label: label.to_owned(),
            pin: pin.to_owned(),
            _dir: dir,
        }
    }

    /// The environment of a `seatwarden` process that keeps keys in this
    /// token (`signing.pkcs11`).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("SOFTHSM2_CONF", self.conf.display().to_string()),
            (
                "SEATWARDEN__SIGNING__PKCS11__MODULE",
                self.module.display().to_string(),
            ),
            (
                "SEATWARDEN__SIGNING__PKCS11__TOKEN_LABEL",
                self.label.clone(),
            ),
            ("SEATWARDEN__SIGNING__PKCS11__PIN", self.pin.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// `signing.pkcs11` for this token, with `pin`.
    pub fn settings(&self, pin: &str) -> seatwarden::signing::pkcs11::Pkcs11Settings {
        seatwarden::signing::pkcs11::Pkcs11Settings {
            module: self.module.clone(),
            token_label: self.label.clone(),
            pin: pin.to_owned().into(),
        }
    }
}

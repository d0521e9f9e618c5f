//! Every binary of this package answers `--version` and exits 0.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[test]
fn every_binary_answers_version() {
    for bin in [
        env!("CARGO_BIN_EXE_spop-bench"),
        env!("CARGO_BIN_EXE_nbari-agent"),
        env!("CARGO_BIN_EXE_ack-agent"),
    ] {
        let out = std::process::Command::new(bin)
            .arg("--version")
            .output()
            .unwrap();
        assert!(out.status.success(), "{bin} --version: {:?}", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        let name = std::path::Path::new(bin)
            .file_name()
            .unwrap()
            .to_string_lossy();
        assert!(
            text.starts_with(&format!("{name} ")) && text.contains(env!("CARGO_PKG_VERSION")),
            "{bin} --version printed {text:?}"
        );
    }
}

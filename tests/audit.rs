//! `dropgate audit verify`: the audit trail's hash chain and its signed
//! checkpoints, tampered with through the `sqlite3` shell.

use std::fs;
use std::process::{Command, Stdio};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::*;

/// A deployment whose daemon took two SFTP uploads (logins and uploads
/// audited) and stopped cleanly (a checkpoint written last).
fn audited() -> Deployment {
    let d = Deployment::new();
    let daemon = d.start();
    let port = daemon.sftp_port();
    for i in 0..2 {
        let file = d.write_input(&format!("news2_a{i}.csv"), news2_csv(5, 2, i).as_bytes());
        let out = sftp(
            &d,
            port,
            &demo_key(&d),
            &format!("put {} inbox/news2_a{i}.csv\n", file.display()),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    daemon.terminate();
    d
}

fn verify(d: &Deployment) -> (i32, Value) {
    let out = d.dg(&["audit", "verify", "--json"]);
    let code = out.status.code().unwrap();
    assert!(code != 2, "{}", text(&out.stderr));
    (code, serde_json::from_slice(&out.stdout).unwrap())
}

/// Runs SQL on the ledger with the `sqlite3` shell, as someone with write
/// access to the file could, after dropping the append-only triggers.
fn tamper(d: &Deployment, sql: &str) {
    let script = format!(
        "DROP TRIGGER IF EXISTS audit_events_no_update;\n         DROP TRIGGER IF EXISTS audit_events_no_delete; {sql}"
    );
    let out = Command::new("sqlite3")
        .arg(d.path("spool/ledger.db"))
        .arg(script)
        .output()
        .expect("the sqlite3 shell (scripts/test installs it)");
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Runs `command` with `input` on its standard input.
fn with_input(command: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn newest(d: &Deployment) -> i64 {
    d.count("SELECT max(id) FROM audit_events")
}

#[test]
fn an_untouched_trail_verifies_and_ends_with_a_signed_checkpoint() {
    let d = audited();
    let (code, found) = verify(&d);
    assert_eq!(code, 0, "{found}");
    assert!(found["broken"].is_null());
    assert!(found["checkpoints"].as_u64().unwrap() >= 1);
    assert_eq!(found["unsigned_rows"], 0, "a clean stop signs the head");
    assert_eq!(
        d.string("SELECT action FROM audit_events ORDER BY id DESC LIMIT 1"),
        "checkpoint"
    );
    let human = text(&d.dg(&["audit", "verify"]).stdout);
    assert!(human.starts_with("audit trail intact"), "{human}");
}

#[test]
fn an_edited_row_is_named() {
    let d = audited();
    tamper(
        &d,
        "UPDATE audit_events SET remote = '10.9.9.9:22' WHERE id = 2;",
    );
    let (code, found) = verify(&d);
    assert_eq!(code, 1, "{found}");
    assert_eq!(found["broken"]["row"], 2, "{found}");
    assert!(
        found["broken"]["reason"]
            .as_str()
            .unwrap()
            .contains("changed")
    );
}

#[test]
fn a_removed_middle_row_is_named() {
    let d = audited();
    tamper(&d, "DELETE FROM audit_events WHERE id = 3;");
    let (code, found) = verify(&d);
    assert_eq!(code, 1, "{found}");
    assert_eq!(found["broken"]["row"], 4, "{found}");
    assert!(
        found["broken"]["reason"]
            .as_str()
            .unwrap()
            .contains("rows 3 to 3 were removed"),
        "{found}"
    );
}

#[test]
fn cutting_off_the_newest_rows_is_detected() {
    let d = audited();
    let last = newest(&d);
    // The newest rows, the final checkpoint among them: what is left is a
    // chain that is whole in itself.
    tamper(
        &d,
        &format!("DELETE FROM audit_events WHERE id > {};", last - 2),
    );
    let (code, found) = verify(&d);
    assert_eq!(code, 1, "{found}");
    assert_eq!(found["broken"]["row"], last - 1, "{found}");
    assert!(
        found["broken"]["reason"]
            .as_str()
            .unwrap()
            .contains("were removed"),
        "{found}"
    );
}

/// The chain's hash, as `ledger::audit` computes it: SHA-256 over the
/// previous hash and each field, length-prefixed (u64, big-endian), a
/// missing field as u64::MAX.
fn chain_hash(prev: &str, row: &[Option<String>]) -> String {
    let mut h = Sha256::new();
    for field in std::iter::once(Some(prev.to_string())).chain(row.iter().cloned()) {
        match field {
            Some(text) => {
                h.update((text.len() as u64).to_be_bytes());
                h.update(text.as_bytes());
            }
            None => h.update(u64::MAX.to_be_bytes()),
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn an_edit_with_the_chain_rebuilt_after_it_is_caught_by_the_signed_checkpoint() {
    let d = audited();
    tamper(
        &d,
        "UPDATE audit_events SET remote = '10.9.9.9:22' WHERE id = 2;",
    );
    // Rebuild every hash from the edited row on, as a forger without the
    // signing key would: the chain is whole again.
    let conn = d.ledger();
    let rows: Vec<(i64, Vec<Option<String>>)> = conn
        .prepare(
            "SELECT id, at, partner, remote, action, file_id, detail FROM audit_events ORDER BY id",
        )
        .unwrap()
        .query_map([], |r| {
            let file_id: Option<i64> = r.get(5)?;
            Ok((
                r.get(0)?,
                vec![
                    Some(r.get(1)?),
                    r.get(2)?,
                    r.get(3)?,
                    Some(r.get(4)?),
                    file_id.map(|i| i.to_string()),
                    r.get(6)?,
                ],
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    drop(conn);
    let mut prev = "0".repeat(64);
    let mut sql = String::new();
    for (id, fields) in rows {
        let hash = chain_hash(&prev, &fields);
        sql.push_str(&format!(
            "UPDATE audit_events SET prev_hash = '{prev}', hash = '{hash}' WHERE id = {id};"
        ));
        prev = hash;
    }
    tamper(&d, &sql);
    let (code, found) = verify(&d);
    assert_eq!(code, 1, "{found}");
    // Only the signed head shows the change: the row it signed is named,
    // with the range the edit lies in.
    let signed: Value =
        serde_json::from_str(&d.string(
            "SELECT detail FROM audit_events WHERE action = 'checkpoint' ORDER BY id LIMIT 1",
        ))
        .unwrap();
    assert_eq!(found["broken"]["row"], signed["row"], "{found}");
    assert!(
        found["broken"]["reason"]
            .as_str()
            .unwrap()
            .contains("(after row 0) was changed and the chain rebuilt"),
        "{found}"
    );
}

#[test]
fn a_checkpoint_verifies_with_ssh_keygen() {
    let d = audited();
    let detail: Value = serde_json::from_str(&d.string(
        "SELECT detail FROM audit_events WHERE action = 'checkpoint' ORDER BY id DESC LIMIT 1",
    ))
    .unwrap();
    let message = format!(
        "dropgate audit checkpoint\nrow {}\nhash {}\n",
        detail["row"],
        detail["hash"].as_str().unwrap()
    );
    let signature = d.path("checkpoint.sig");
    fs::write(&signature, detail["signature"].as_str().unwrap()).unwrap();
    let public = Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(d.path("config/keys/signing_ed25519"))
        .output()
        .unwrap();
    assert!(public.status.success(), "{}", text(&public.stderr));
    let allowed = d.path("allowed_signers");
    fs::write(
        &allowed,
        format!(
            "dropgate namespaces=\"dropgate-audit\" {}",
            text(&public.stdout)
        ),
    )
    .unwrap();
    let mut verify = Command::new("ssh-keygen");
    verify
        .args([
            "-Y",
            "verify",
            "-I",
            "dropgate",
            "-n",
            "dropgate-audit",
            "-f",
        ])
        .arg(&allowed)
        .arg("-s")
        .arg(&signature);
    let out = with_input(&mut verify, message.as_bytes());
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn keys_made_the_config_run_and_work_by_hand_are_audited_and_signed() {
    let d = Deployment::new();
    d.start().terminate();
    let made = d.strings(
        "SELECT json_extract(detail, '$.key') FROM audit_events WHERE action = 'key_created'",
    );
    for key in ["age identity", "signing key", "SSH host key"] {
        assert!(made.iter().any(|k| k == key), "{made:?}");
    }
    assert_eq!(
        d.string(
            "SELECT json_extract(detail, '$.sha256') FROM audit_events WHERE action = 'config_loaded'"
        ),
        sha256_hex(&fs::read(d.config_path()).unwrap())
    );
    let file = d.write_input("news2_hand.csv", news2_csv(3, 1, 0).as_bytes());
    let out = d.ingest(&[&file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let by = d.string(
        "SELECT json_extract(detail, '$.by') FROM audit_events
         WHERE action = 'ingest' AND file_id = (SELECT max(id) FROM files)",
    );
    assert!(by.contains("uid "), "{by}");
    // Received, by whatever source: its source, never its name.
    assert_eq!(
        d.string(
            "SELECT json_extract(detail, '$.source') FROM audit_events
             WHERE action = 'received' AND file_id = (SELECT max(id) FROM files)"
        ),
        "demo-carehome-drop"
    );
    assert_eq!(
        d.count("SELECT count(*) FROM audit_events WHERE detail LIKE '%news2_hand%'"),
        0
    );
    assert_eq!(
        d.string("SELECT action FROM audit_events ORDER BY id DESC LIMIT 1"),
        "checkpoint",
        "a command that wrote audit rows signs them"
    );
    let (code, found) = verify(&d);
    assert_eq!(code, 0, "{found}");
}

#[test]
fn an_export_of_the_trail_verifies_offline_and_an_edit_in_it_does_not() {
    let d = audited();
    let export = d.dg(&["audit", "export"]);
    assert!(export.status.success(), "{}", text(&export.stderr));
    let lines = text(&export.stdout);
    assert_eq!(
        lines.lines().count() as i64,
        d.count("SELECT count(*) FROM audit_events")
    );
    let signers = d.dg(&["signing-key"]);
    let allowed = d.write_input("allowed_signers", &signers.stdout);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/verify-audit-export");
    let check = |jsonl: &str| with_input(Command::new(script).arg(&allowed), jsonl.as_bytes());
    let out = check(&lines);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).starts_with("audit export intact"));
    let edited = lines.replacen("\"action\":\"login\"", "\"action\":\"logout\"", 1);
    assert_ne!(edited, lines);
    let out = check(&edited);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("was changed"),
        "{}",
        text(&out.stdout)
    );
    // A day to come: nothing yet.
    let later = d.dg(&["audit", "export", "--since", "2999-01-01"]);
    assert!(later.status.success() && later.stdout.is_empty());
}

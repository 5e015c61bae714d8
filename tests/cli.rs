//! Command-line behaviour that scripts rely on.

use std::os::unix::fs::PermissionsExt;

use crate::harness::*;

#[test]
fn check_config_accepts_the_shipped_config() {
    let d = Deployment::with_config(SHIPPED_CONFIG);
    let out = d.dg(&["check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Each feed with what it makes, for whoever reads it at 7am.
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "feed news2        from demo-carehome, 14 columns, makes service_user, observations"
        ),
        "{stdout}"
    );
}

#[test]
fn check_config_lists_every_error_as_path_line_column() {
    let d = Deployment::new();
    let broken = SHIPPED_CONFIG
        .replace(
            "partner = \"demo-carehome\"\nmatch",
            "partner = \"demo-care-home\"\nmatch",
        )
        .replace("type = \"nhs_number\"", "type = \"nhs\"")
        .replace("min_age = \"500ms\"", "min_age = \"500 moments\"");
    d.write_config(&broken);
    let out = d.dg(&["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let path = d.config_path().display().to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    for line in &lines {
        let rest = line
            .strip_prefix(&format!("{path}:"))
            .unwrap_or_else(|| panic!("{line}"));
        let mut parts = rest.splitn(3, ':');
        let line_no: usize = parts.next().unwrap().parse().unwrap();
        let col: usize = parts.next().unwrap().parse().unwrap();
        assert!(line_no > 0 && col > 0, "{line}");
    }
    assert!(
        stderr.contains("unknown partner `demo-care-home`"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown type `nhs`"), "{stderr}");
    assert!(
        stderr.contains("`500 moments` is not a duration"),
        "{stderr}"
    );
}

#[test]
fn the_config_path_comes_from_the_environment_too() {
    let d = Deployment::new();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dropgate"))
        .arg("check-config")
        .env("DROPGATE_CONFIG", d.config_path())
        .current_dir(d.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn every_command_has_help_with_an_example() {
    let d = Deployment::new();
    for command in [
        vec!["run"],
        vec!["check-config"],
        vec!["ingest"],
        vec!["files"],
        vec!["show"],
        vec!["replay"],
        vec!["keygen"],
        vec!["push"],
        vec!["status"],
        vec!["alerts"],
        vec!["completions"],
        vec!["man"],
        vec!["patients"],
        vec!["patients", "find"],
        vec!["patients", "link"],
        vec!["patients", "unlink"],
    ] {
        let mut args = command.clone();
        args.push("--help");
        let out = d.dg(&args);
        assert!(out.status.success(), "{command:?}");
        assert!(
            text(&out.stdout).contains("Example"),
            "{command:?} help lacks an example"
        );
    }
}

#[test]
fn keygen_creates_private_keys_once_and_only_replaces_them_when_forced() {
    let d = Deployment::new();
    let identity = d.path("config/keys/age-identity.txt");
    for key in ["age-identity.txt", "signing_ed25519", "ssh_host_ed25519"] {
        let mode = std::fs::metadata(d.path(&format!("config/keys/{key}")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let before = std::fs::read(&identity).unwrap();
    let out = d.dg(&["keygen"]);
    assert!(text(&out.stdout).contains(&d.recipient));
    assert_eq!(std::fs::read(&identity).unwrap(), before);
    let out = d.dg(&["keygen", "--force"]);
    assert!(out.status.success());
    assert_ne!(std::fs::read(&identity).unwrap(), before);
    // The signing key is a standard OpenSSH key.
    let out = std::process::Command::new("ssh-keygen")
        .args(["-l", "-f"])
        .arg(d.path("config/keys/signing_ed25519"))
        .output()
        .expect("ssh-keygen must be installed (scripts/test installs it)");
    assert!(
        text(&out.stdout).contains("ED25519"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_readable_identity_is_refused() {
    let d = Deployment::new();
    let identity = d.path("config/keys/age-identity.txt");
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o644)).unwrap();
    let plain = d.write_input("news2_p.csv", news2_csv(1, 1, 0).as_bytes());
    let out = d.ingest(&[&plain]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("chmod 600"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn files_filters_by_state_and_feed() {
    let d = Deployment::new();
    let good = d.write_input("news2_g.csv", news2_csv(2, 2, 0).as_bytes());
    let bad = d.write_input("other.txt", b"x");
    d.ingest(&[&good, &bad]);
    let out = d.dg(&["files", "--state", "quarantined", "--json"]);
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "other.txt");
    let out = d.dg(&["files", "--feed", "news2"]);
    let table = text(&out.stdout);
    assert!(
        table.contains("news2_g.csv") && !table.contains("other.txt"),
        "{table}"
    );
    let out = d.dg(&["files", "--state", "lost"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn schema_check_reads_a_sample_as_its_feed_would_and_records_nothing() {
    let d = Deployment::new();
    let good = d.write_input("sample.csv", news2_csv(6, 3, 0).as_bytes());
    let encrypted = d.encrypt(&good, false);
    for sample in [&good, &encrypted] {
        let out = d.dg(&["schema", "check", "news2", sample.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("would be loaded"),
            "{}",
            text(&out.stdout)
        );
        assert!(
            text(&out.stdout).contains("6 read, 6 valid"),
            "{}",
            text(&out.stdout)
        );
    }

    let mut bad = news2_csv(3, 3, 0);
    bad = bad.replacen(",A,", ",Q,", 1);
    let bad = d.write_input("bad.csv", bad.as_bytes());
    let out = d.dg(&["schema", "check", "news2", bad.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["would_be"], "quarantined");
    assert_eq!(report["problems"][0]["code"], "not_in_code_list");
    assert_eq!(report["problems"][0]["line"], 2);

    let out = d.dg(&["schema", "check", "nosuchfeed", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(text(&out.stderr).contains("no feed `nosuchfeed`; the configuration has: news2"));
    assert!(d.files().is_empty(), "a sample is never recorded");
}

#[test]
fn a_fixed_width_feed_is_checked_by_character_positions() {
    let config = format!(
        "{}\n[feeds.gp]\npartner = \"demo-carehome\"\nmatch = [\"gp_*.txt\"]\nencryption = \"none\"\nformat = \"fixed\"\n\n\
         [feeds.gp.fixed]\nencoding = \"windows-1252\"\n\n\
         [[feeds.gp.columns]]\nname = \"nhs\"\ntype = \"nhs_number\"\nstart = 1\nlength = 10\n\n\
         [[feeds.gp.columns]]\nname = \"practice\"\ntype = \"ods_code\"\nstart = 11\nend = 16\n\n\
         [[feeds.gp.columns]]\nname = \"issued\"\ntype = \"date\"\nformat = \"%Y%m%d\"\nstart = 17\nlength = 8\n",
        fast(SHIPPED_CONFIG)
    );
    let d = Deployment::with_config(&config);
    let good = d.write_input(
        "gp_1.txt",
        format!(
            "{}A81001{}\r\n{}B82002{}\r\n",
            nhs_number(1),
            "20261201",
            nhs_number(2),
            "20261202"
        )
        .as_bytes(),
    );
    let out = d.dg(&["schema", "check", "gp", good.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("2 read, 2 valid"),
        "{}",
        text(&out.stdout)
    );

    let bad = d.write_input(
        "gp_2.txt",
        format!("{}A8-001{}\n", nhs_number(1), "20261301").as_bytes(),
    );
    let out = d.dg(&["schema", "check", "gp", bad.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let codes: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["not_ods_code", "not_date"]);
}

#[test]
fn a_unique_set_finds_a_record_sent_twice_in_one_file() {
    let config = fast(SHIPPED_CONFIG).replacen(
        "on_error = \"reject_file\"",
        "on_error = \"reject_file\"\nunique = [[\"resident_id\", \"observed_at\"]]",
        1,
    );
    let d = Deployment::with_config(&config);
    let csv = news2_csv(4, 2, 0);
    let again = csv.lines().nth(2).unwrap().to_string();
    let sample = d.write_input("twice.csv", format!("{csv}{again}\n").as_bytes());
    let out = d.dg(&[
        "schema",
        "check",
        "news2",
        sample.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["problems"][0]["code"], "not_unique");
    assert_eq!(report["problems"][0]["line"], 6);
    assert_eq!(
        report["problems"][0]["message"],
        "the same `resident_id` and `observed_at` as line 3; they must not repeat within a file"
    );

    let unknown = config.replacen("\"observed_at\"]]", "\"observed\"]]", 1);
    d.write_config(&unknown);
    let out = d.dg(&["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("`unique`: no column `observed` in this feed"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn schema_infer_drafts_a_feed_that_check_config_accepts_and_the_sample_passes() {
    let d = Deployment::new();
    let mut sample = String::from("Client ID;NHS No;Birth Date;Event Type;Start;Score;Postcode\n");
    let events = ["Assessment", "Review", "Service"];
    for i in 0..30u32 {
        sample.push_str(&format!(
            "C{i:04};{};{:02}/03/1941;{};2026-11-{:02} 09:30:00;{}.5;SW1A 1AA\n",
            nhs_number(i + 1),
            1 + i % 28,
            events[(i % 3) as usize],
            1 + i % 28,
            i % 7
        ));
    }
    let path = d.write_input("clt_sample.csv", sample.as_bytes());
    let infer = |extra: &[&str]| {
        let mut args = vec![
            "schema",
            "infer",
            "--partner",
            "demo-carehome",
            "--feed",
            "clt",
        ];
        args.extend(extra);
        args.push(path.to_str().unwrap());
        let out = d.dg(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    // By default no value of the sample is printed, not even a code list's.
    let cautious = infer(&[]);
    assert!(!cautious.contains("Assessment"), "{cautious}");
    assert!(
        cautious.contains("3 distinct short values: a `code` column?"),
        "{cautious}"
    );
    let draft = infer(&["--code-lists"]);
    for expected in [
        "delimiter = \";\"",
        "name = \"NHS No\"\ntype = \"nhs_number\"",
        "name = \"Birth Date\"\ntype = \"date\"\nformat = \"%d/%m/%Y\"",
        "values = [\"Assessment\", \"Review\", \"Service\"]",
        "type = \"datetime\"\nformat = \"%Y-%m-%d %H:%M:%S\"",
        "type = \"decimal\"",
        "type = \"postcode\"",
    ] {
        assert!(draft.contains(expected), "no {expected:?} in\n{draft}");
    }
    // No value of a text column (the client ids) and no NHS number is printed.
    assert!(
        !draft.contains("C0001") && !draft.contains(&nhs_number(1)),
        "{draft}"
    );
    // Added to the configuration as drafted, it is accepted, and the sample passes.
    d.write_config(&format!("{}\n{draft}", fast(SHIPPED_CONFIG)));
    let out = d.dg(&["check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = d.dg(&["schema", "check", "clt", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn schema_infer_drafts_an_xml_feed_with_its_record_element_paths_and_namespaces() {
    let d = Deployment::new();
    let mut sample = String::from(
        "<?xml version=\"1.0\"?>\n<Transfers xmlns=\"urn:example:transfers:2\" xmlns:x=\"urn:example:extra\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n",
    );
    for i in 0..20u32 {
        sample.push_str(&format!(
            "  <Transfer id=\"T{i:03}\" xml:lang=\"en\"><Patient><NHS>{}</NHS><Born>1941-03-{:02}</Born></Patient>\
             <x:Ward code=\"W{}\"/><Sent>2026-11-{:02}T09:30:00Z</Sent>{}</Transfer>\n",
            nhs_number(i + 1),
            1 + i % 28,
            i % 3,
            1 + i % 28,
            if i % 2 == 0 {
                "<Note>falls risk</Note>"
            } else {
                "<Note xsi:nil=\"true\"/>"
            }
        ));
    }
    sample.push_str("</Transfers>\n");
    let path = d.write_input("transfers_sample.xml", sample.as_bytes());
    let out = d.dg(&[
        "schema",
        "infer",
        "--partner",
        "demo-carehome",
        "--feed",
        "transfers",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let draft = text(&out.stdout);
    for expected in [
        "format = \"xml\"",
        "record = \"/ns:Transfers/ns:Transfer\"",
        "namespaces = { xsi = \"http://www.w3.org/2001/XMLSchema-instance\", xml = \"http://www.w3.org/XML/1998/namespace\", x = \"urn:example:extra\", ns = \"urn:example:transfers:2\" }",
        "name = \"id\"\npath = \"@id\"",
        "name = \"NHS\"\npath = \"ns:Patient/ns:NHS\"\ntype = \"nhs_number\"",
        "path = \"ns:Patient/ns:Born\"\ntype = \"date\"",
        "path = \"x:Ward/@code\"",
        "path = \"ns:Sent\"\ntype = \"datetime\"",
        // Attributes in namespaces no element uses have their prefixes too.
        "path = \"@xml:lang\"",
        "path = \"ns:Note/@xsi:nil\"",
    ] {
        assert!(draft.contains(expected), "no {expected:?} in\n{draft}");
    }
    assert!(!draft.contains(&nhs_number(1)), "{draft}");
    // Added as drafted, it is accepted, and the sample passes.
    d.write_config(&format!("{}\n{draft}", fast(SHIPPED_CONFIG)));
    let out = d.dg(&["check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = d.dg(&["schema", "check", "transfers", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // A DTD is refused here as everywhere.
    let dtd = d.write_input(
        "dtd.xml",
        b"<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY e \"x\">]><a><b>&e;</b></a>",
    );
    let out = d.dg(&[
        "schema",
        "infer",
        "--partner",
        "demo-carehome",
        dtd.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("DTD"), "{}", text(&out.stderr));
}

#[test]
fn a_listing_whose_reader_has_gone_ends_quietly() {
    let d = Deployment::new();
    let file = d.write_input("news2_a.csv", news2_csv(2, 1, 0).as_bytes());
    assert!(d.ingest(&[&file]).status.success());
    // The reading end is closed before the listing is written, as `| head` does.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = d
        .command(&["files"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(13), "{:?}", out.status);
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}

/// Keys, the ledger and the spool are the owner's alone; a private key
/// others can read stops the daemon before it starts, saying how to fix it.
#[test]
fn private_files_are_the_owners_alone_and_a_shared_key_is_refused() {
    let d = Deployment::new();
    d.start().terminate();
    let mode = |relative: &str| {
        std::fs::metadata(d.path(relative))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("spool"), 0o700);
    assert_eq!(mode("spool/ledger.db"), 0o600);
    assert_eq!(mode("config/keys/signing_ed25519"), 0o600);
    let key = d.path("config/keys/signing_ed25519");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let refusal = refused_start(&d);
    assert!(
        refusal.contains(&format!("run `chmod 600 {}`", key.display())),
        "{refusal}"
    );
}

/// `dropgate run` that must stop at once with exit 2; its stderr.
fn refused_start(d: &Deployment) -> String {
    let mut run = d
        .command(&["run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Should it start after all, it is stopped rather than left running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while run.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = run.kill();
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    text(&out.stderr)
}

#[test]
fn rsa_private_keys_and_shared_login_keys_are_refused_at_start() {
    let d = Deployment::new();
    // An RSA host key, as `ssh-keygen` makes one.
    let host_key = d.path("config/keys/ssh_host_ed25519");
    std::fs::remove_file(&host_key).unwrap();
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&host_key)
        .status()
        .unwrap();
    assert!(made.success());
    let refusal = refused_start(&d);
    assert!(
        refusal.contains("is an RSA key") && refusal.contains("ssh-keygen -t ed25519"),
        "{refusal}"
    );

    // A destination's login key that others can read, found at start, not
    // at the first push.
    let d = Deployment::new();
    let login = new_key(&d, "login_key");
    std::fs::set_permissions(&login, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = std::fs::read_to_string(d.config_path()).unwrap();
    d.write_config(&format!(
        "{config}\n[destinations.ward]\nkind = \"sftp\"\nhost = \"127.0.0.1\"\nuser = \"x\"\nprivate_key = \"{}\"\nhost_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\"\n",
        login.display()
    ));
    let refusal = refused_start(&d);
    assert!(
        refusal.contains(&format!("run `chmod 600 {}`", login.display())),
        "{refusal}"
    );
}

#[test]
fn status_shows_files_waiting_in_a_folder_todays_counts_per_feed_and_the_disk() {
    let d = Deployment::new();
    // As a partner would, before the daemon first ran.
    std::fs::create_dir_all(d.drop_folder()).unwrap();
    d.drop_file("news2_s1.csv", news2_csv(3, 2, 0).as_bytes());
    let status = |d: &Deployment| -> serde_json::Value {
        let out = d.dg(&["status", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let before = status(&d);
    let source = &before["sources"][0];
    assert_eq!(source["source"], "demo-carehome-drop");
    assert_eq!(source["files_waiting"], 1);
    assert_eq!(before["feeds"][0]["files_today"], 0);
    assert!(before["feeds"][0]["last_file_at"].is_null());

    let daemon = d.start();
    let bad = news2_csv(2, 2, 50).replace(&nhs_number(1), "1234567890");
    d.drop_file("news2_s2.csv", bad.as_bytes());
    wait_for("both settled", std::time::Duration::from_secs(20), || {
        d.count("SELECT count(*) FROM files WHERE state <> 'received'") == 2
    });
    daemon.terminate();
    let after = status(&d);
    assert_eq!(after["sources"][0]["files_waiting"], 0);
    let feed = &after["feeds"][0];
    assert_eq!(feed["feed"], "news2");
    assert_eq!(feed["files_today"], 2);
    assert_eq!(feed["rows_today"], 3);
    assert_eq!(feed["quarantined_today"], 1);
    assert_eq!(
        feed["last_file_at"],
        d.string("SELECT max(received_at) FROM files").as_str()
    );
    assert_eq!(after["files"]["loaded"], 1);
    assert_eq!(after["files"]["quarantined"], 1);
    assert!(after["spool"]["free_bytes"].as_u64().unwrap() > 0);
    assert!(after["ledger"]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(after["schedules"][0]["schedule"], "demo-nightly");
    assert!(after["schedules"][0]["next_run_at"].is_string());

    let out = text(&d.dg(&["status"]).stdout);
    assert!(
        out.contains("news2                    2 file(s), 3 row(s), 1 quarantined"),
        "{out}"
    );
}

#[test]
fn completions_and_the_man_page_are_made_from_the_command_line_itself() {
    let d = Deployment::new();
    let out = d.dg(&["completions", "bash"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let script = d.path("dropgate.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // bash itself finds the script well-formed.
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(syntax.status.success(), "{}", text(&syntax.stderr));
    let completions = text(&out.stdout);
    // roff writes a hyphen as `\-`.
    let man = text(&d.dg(&["man"]).stdout).replace("\\-", "-");
    assert!(
        man.starts_with(".ie") && man.contains(".TH dropgate 1"),
        "{man}"
    );
    for command in [
        "run",
        "check-config",
        "status",
        "alerts",
        "patients",
        "audit",
    ] {
        assert!(completions.contains(command), "{command} not completed");
        assert!(man.contains(command), "{command} not in the man page");
    }
    for shell in ["zsh", "fish"] {
        assert!(d.dg(&["completions", shell]).status.success());
    }
}

#[test]
fn init_makes_a_deployment_that_checks_and_never_writes_over_a_config() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("site");
    let init = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_dropgate"))
            .arg("init")
            .arg(&dir)
            .env_remove("DROPGATE_CONFIG")
            .output()
            .unwrap()
    };
    let out = init();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("age recipient: age1"), "{stdout}");
    assert!(stdout.contains("check-config"), "next steps: {stdout}");
    let config = dir.join("config/dropgate.toml");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), SHIPPED_CONFIG);
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_dropgate"))
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));
    let key = dir.join("config/keys/age-identity.txt");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(dir.join("spool/ledger.db").exists());

    std::fs::write(&config, "# mine\n").unwrap();
    let again = init();
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("never writes over"));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine\n");
}

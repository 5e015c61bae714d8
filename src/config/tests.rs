use std::path::Path;

use super::*;

const SHIPPED: &str = include_str!("../../config/dropgate.toml");

fn errors(text: &str) -> Vec<String> {
    match Config::parse(Path::new("/etc/dropgate/dropgate.toml"), text) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors.iter().map(|e| e.to_string()).collect(),
    }
}

/// The line and column where `needle` starts in `text`, as `LINE:COL`.
fn at(text: &str, needle: &str) -> String {
    let offset = text.find(needle).expect("needle in text");
    let (line, column) = line_column(text, offset);
    format!("{line}:{column}")
}

#[test]
fn shipped_config_is_valid() {
    let config = Config::parse(Path::new("/opt/dg/config/dropgate.toml"), SHIPPED).unwrap();
    let feed = &config.feeds["news2"];
    assert_eq!(feed.encryption, Encryption::Optional);
    assert_eq!(feed.schema.encoding, Encoding::Auto);
    assert_eq!(feed.schema.columns.len(), 14);
    assert!(feed.patterns.is_match("news2_20261122.csv.age"));
    assert!(feed.patterns.is_match("news2_20261122.csv"));
    assert!(!feed.patterns.is_match("other.csv"));
    let observations = feed.mapping.observations.as_ref().unwrap();
    assert_eq!(observations.vitals.len(), 7);
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let config = Config::parse(Path::new("/opt/dg/config/dropgate.toml"), SHIPPED).unwrap();
    assert_eq!(config.daemon.spool, Path::new("/opt/dg/spool"));
    assert_eq!(config.daemon.ledger, Path::new("/opt/dg/spool/ledger.db"));
    assert_eq!(
        config.keys.age_identity,
        Path::new("/opt/dg/config/keys/age-identity.txt")
    );
    let SourceKind::Local(local) = &config.sources["demo-carehome-drop"].kind else {
        panic!("the demo source is a local folder");
    };
    assert_eq!(local.path, Path::new("/opt/dg/spool/drop/demo-carehome"));
    assert_eq!(local.min_age, Duration::from_millis(500));
}

#[test]
fn every_error_is_reported_with_its_position() {
    let text = r#"
[daemon]
time_zone = "Europe/Lundon"

[partners.care]

[sources.drop]
kind = "local"
partner = "care"
path = "drop"
min_age = "soon"
colour = "blue"

[feeds.a]
partner = "nobody"
match = ["a_*.csv", "sub/b_*.csv", "*.part"]
[[feeds.a.columns]]
name = "id"
type = "text"
[[feeds.a.columns]]
name = "n"
type = "integer"
min = 10
max = 5
[[feeds.a.columns]]
name = "when"
type = "datetime"
[feeds.a.map.service_user]
local_id = "id"
given_name = "id"
middle_name = "n"

[feeds.b]
partner = "care"
match = ["b_*.csv"]
[[feeds.b.columns]]
name = "id"
type = "string"
[[feeds.b.columns]]
name = "id"
type = "string"
max_length = 0
[feeds.b.map.service_user]
local_id = "ident"
"#;
    let got = errors(text);
    let file = "/etc/dropgate/dropgate.toml";
    let expect = [
        format!(
            "{file}:{}: unknown time zone `Europe/Lundon`",
            at(text, "\"Europe/Lundon")
        ),
        format!("{file}:{}: unknown field `colour`", at(text, "colour")),
        format!(
            "{file}:{}: unknown partner `nobody` (defined partners: care)",
            at(text, "\"nobody")
        ),
        format!(
            "{file}:{}: glob `sub/b_*.csv` can never match",
            at(text, "\"sub/b_")
        ),
        format!(
            "{file}:{}: glob `*.part` can never match",
            at(text, "\"*.part")
        ),
        format!(
            "{file}:{}: column `id`: unknown type `text`",
            at(text, "\"text")
        ),
        format!(
            "{file}:{}: column `n`: max 5 is below min 10",
            at(text, "5\n")
        ),
        format!(
            "{file}:{}: unknown field `middle_name`",
            at(text, "middle_name")
        ),
        format!(
            "{file}:{}: column `id` is declared twice",
            at(text, "\"id\"\ntype = \"string\"\nmax_length")
        ),
        format!(
            "{file}:{}: max_length must be at least 1",
            at(text, "0\n[feeds.b.map")
        ),
        format!(
            "{file}:{}: service_user.local_id names column `ident`, which the feed does not declare",
            at(text, "\"ident")
        ),
    ];
    for e in &expect {
        assert!(
            got.iter().any(|g| g.starts_with(e.as_str())),
            "missing `{e}` in:\n{}",
            got.join("\n")
        );
    }
    // The bad duration is reported too, though serde stops at the first
    // unknown field in that table: both live in one source entry.
    assert!(got.len() >= expect.len(), "{}", got.join("\n"));
}

#[test]
fn a_column_mapped_twice_is_an_error() {
    let text = SHIPPED.replace(
        "given_name = \"given_name\"",
        "given_name = \"family_name\"",
    );
    let got = errors(&text);
    assert!(
        got.iter().any(|e| e.contains(
            "column `family_name` is mapped twice: to service_user.family_name and to service_user.given_name"
        )),
        "{got:?}"
    );
}

#[test]
fn a_mapping_must_fit_the_column_type() {
    let text = SHIPPED.replace("spo2 = \"spo2\"", "spo2 = \"consciousness\"");
    let got = errors(&text);
    assert!(
        got.iter()
            .any(|e| e.contains("observations.spo2 needs a integer or decimal column")),
        "{got:?}"
    );
}

#[test]
fn options_that_do_not_apply_to_a_type_are_errors() {
    let text = SHIPPED.replace(
        "name = \"gender\"\ntype = \"code\"",
        "name = \"gender\"\ntype = \"code\"\nmax_length = 3",
    );
    let got = errors(&text);
    assert!(
        got.iter()
            .any(|e| e.contains("column `gender`: `max_length` does not apply to type `code`")),
        "{got:?}"
    );
}

#[test]
fn syntax_errors_carry_positions() {
    let got = errors("[daemon]\nspool = \n");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("/etc/dropgate/dropgate.toml:2:"),
        "{got:?}"
    );
}

#[test]
fn unknown_sections_are_errors() {
    let got = errors("[daemons]\n");
    assert!(got[0].contains("1:2: unknown section `daemons`"), "{got:?}");
}

#[test]
fn a_schedule_needs_a_grant_for_every_kind_it_exports() {
    // The care home has an outbox but no grant gives it anything.
    let text = format!(
        "{SHIPPED}\n[schedules.back]\nconsumer = \"demo-carehome\"\ncron = \"0 6 * * *\"\nformats = [\"csv\"]\nrecords = [\"observations\"]\n"
    );
    let got = errors(&text);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains("no grant gives `demo-carehome` `observations` records"),
        "{got:?}"
    );
}

#[test]
fn schedules_and_grants_are_checked_field_by_field() {
    let text = format!(
        "{SHIPPED}
[grants.bad]
controller = \"nobody\"
consumer = \"stranger\"
records = [\"observations\", \"x_rays\"]
feeds = [\"news2\", \"nope\"]
purpose = \" \"
valid_from = \"2026-13-01\"

[grants.backwards]
controller = \"demo-controller\"
consumer = \"demo-hospital\"
records = [\"observations\"]
purpose = \"care\"
valid_from = \"2026-06-01\"
valid_until = \"2026-05-31\"

[schedules.odd]
consumer = \"demo-hospital\"
cron = \"30 1 * *\"
formats = [\"hl7v2\"]
records = [\"observations\"]
catch_up = \"twice\"
"
    );
    let got = errors(&text).join("\n");
    for expected in [
        "grant `bad`: controller `nobody` is not declared under [controllers]",
        "grant `bad`: consumer `stranger` is not a partner",
        "grant `bad`: unknown record kind `x_rays`, expected one of `service_user`, `observations`, `staff`, `care_record_entry`, `care_transaction`, `alert`, `red_bag`, `trend`",
        "grant `bad`: no feed `nope`",
        "grant `bad`: `purpose` must say why",
        "valid_from must be a date, `YYYY-MM-DD`",
        "grant `backwards`: valid_until is before valid_from",
        "schedule `odd`: `30 1 * *` has 4 fields",
        "schedule `odd`: catch_up `twice` must be `once` or `skip`",
    ] {
        assert!(got.contains(expected), "missing {expected:?} in:\n{got}");
    }
    // A wrong catch_up stops the schedule's other checks: the format is checked alone.
    let text = format!(
        "{SHIPPED}\n[schedules.odd]\nconsumer = \"demo-hospital\"\ncron = \"30 1 * * *\"\nformats = [\"hl7v2\"]\nrecords = [\"observations\"]\n"
    );
    let got = errors(&text).join("\n");
    assert!(
        got.contains(
            "schedule `odd`: unknown format `hl7v2`, expected one of `fhir_ndjson`, `csv`"
        ),
        "{got}"
    );
}

#[test]
fn an_encrypted_schedule_needs_the_consumers_recipients() {
    let text = SHIPPED
        .replace("# encrypt = true ", "encrypt = true ")
        .replace(
            "[partners.demo-hospital.age]",
            "[partners.demo-hospital.unused]",
        )
        .replace("recipients = [\"keys/demo-hospital-age.txt.pub\"]\n", "")
        .replace("demo_identity = \"keys/demo-hospital-age.txt\"\n", "");
    let got = errors(&text).join("\n");
    assert!(
        got.contains(
            "`encrypt = true` needs the consumer's recipients under [partners.demo-hospital.age]"
        ),
        "{got}"
    );
    let text = SHIPPED.replace(
        "recipients = [\"keys/demo-hospital-age.txt.pub\"]",
        "recipients = [\"age1notarecipient\"]",
    );
    let got = errors(&text).join("\n");
    assert!(got.contains("not an age recipient"), "{got}");
}

#[test]
fn a_grant_of_counts_does_not_let_a_route_send_a_feeds_files() {
    // The grant names the feed, but gives trend counts only: raw files hold more.
    let text = format!(
        "{SHIPPED}
[grants.counts]
controller = \"demo-controller\"
consumer = \"demo-carehome\"
records = [\"trend\"]
feeds = [\"news2\"]
purpose = \"planning\"
valid_from = \"2026-01-01\"

[destinations.back]
kind = \"sftp\"
host = \"127.0.0.1\"
user = \"x\"
private_key = \"keys/demo-carehome\"
host_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\"

[routes.back]
feed = \"news2\"
destination = \"back\"
consumer = \"demo-carehome\"
"
    );
    let got = errors(&text).join("\n");
    assert!(
        got.contains("route `back`: no grant gives `demo-carehome` the files of feed `news2`"),
        "{got}"
    );
}

#[test]
fn a_route_needs_a_grant_of_every_kind_the_feed_maps_also_the_newer_ones() {
    let route = "
[destinations.ward]
kind = \"sftp\"
host = \"127.0.0.1\"
user = \"x\"
private_key = \"keys/demo-carehome\"
host_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\"

[routes.ward]
feed = \"news2\"
destination = \"ward\"
consumer = \"demo-hospital\"
";
    // The shipped grant gives the hospital service users and observations:
    // enough for the news2 feed as shipped.
    assert_eq!(errors(&format!("{SHIPPED}{route}")), Vec::<String>::new());
    // Once the feed also makes alerts, its files hold what no grant gives.
    let text = with_map("[feeds.news2.map.alert]\ntype = { value = \"risk\" }");
    let got = errors(&format!("{text}{route}")).join("\n");
    assert!(
        got.contains("route `ward`: no grant gives `demo-hospital` the files of feed `news2`"),
        "{got}"
    );
}

#[test]
fn a_partners_controller_must_be_declared() {
    let text = SHIPPED.replace(
        "controller = \"demo-controller\"     #",
        "controller = \"demo-ctrl\"     #",
    );
    let got = errors(&text);
    assert!(
        got.iter().any(|e| e.contains(
            "partner `demo-carehome`: controller `demo-ctrl` is not declared under [controllers]"
        )),
        "{got:?}"
    );
}

#[test]
fn the_shipped_schedule_exports_what_its_grant_gives() {
    let config = Config::parse(Path::new("/etc/dropgate/dropgate.toml"), SHIPPED).unwrap();
    let schedule = &config.schedules["demo-nightly"];
    assert_eq!(schedule.consumer, "demo-hospital");
    assert_eq!(schedule.mode, ExportMode::Incremental);
    assert_eq!(schedule.catch_up, CatchUp::Once);
    let grant = &config.grants["demo-hospital-direct-care"];
    assert_eq!(grant.controller, "demo-controller");
    assert!(grant.in_force(chrono::NaiveDate::from_ymd_opt(2026, 12, 3).unwrap()));
    assert!(!grant.in_force(chrono::NaiveDate::from_ymd_opt(2025, 12, 31).unwrap()));
    assert_eq!(
        config.partners["demo-carehome"].controller.as_deref(),
        Some("demo-controller")
    );
}

#[test]
fn overlapping_sources_are_refused() {
    let text = format!(
        "{SHIPPED}\n[sources.inner]\nkind = \"local\"\npartner = \"demo-carehome\"\npath = \"../spool/drop/demo-carehome/sub\"\n"
    );
    let got = errors(&text);
    assert!(
        got.iter().any(|e| e.contains("watch overlapping folders")),
        "{got:?}"
    );
}

#[test]
fn the_same_glob_in_two_feeds_of_one_partner_is_refused() {
    let second = SHIPPED
        .split("[feeds.news2]")
        .nth(1)
        .unwrap()
        .replace("feeds.news2", "feeds.copy");
    let text = format!("{SHIPPED}\n[feeds.copy]{second}");
    let got = errors(&text);
    assert!(
        got.iter()
            .any(|e| e.contains("glob `news2_*.csv.age` is already used by another feed")),
        "{got:?}"
    );
}

#[test]
fn feed_lookup_reports_ambiguity() {
    let text = SHIPPED.replace(
        "match = [\"news2_*.csv.age\", \"news2_*.csv\"]",
        "match = [\"news2_*.csv.age\", \"news2_*.csv\", \"*.csv\"]",
    );
    let config = Config::parse(Path::new("/x/dropgate.toml"), &text).unwrap();
    assert!(matches!(
        config.feed_for("demo-carehome", "news2_1.csv"),
        FeedMatch::One(_)
    ));
    assert!(matches!(
        config.feed_for("demo-carehome", "x.txt"),
        FeedMatch::None
    ));
    assert!(matches!(
        config.feed_for("other", "news2_1.csv"),
        FeedMatch::None
    ));
}

/// The shipped config plus one `ftp` source with the given extra lines,
/// read from a folder holding a password file.
fn with_ftp_source(extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ftp-password"), "secret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("ftp-password"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let text = format!(
        "{SHIPPED}\n[sources.pull]\nkind = \"ftp\"\npartner = \"demo-carehome\"\nhost = \"ftp.example.org\"\nuser = \"care\"\n{extra}\n"
    );
    (dir, text)
}

fn ftp_errors(extra: &str) -> Vec<String> {
    let (dir, text) = with_ftp_source(extra);
    match Config::parse(&dir.path().join("dropgate.toml"), &text) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn an_ftp_source_reads_its_password_file_and_cron_schedule() {
    let (dir, text) = with_ftp_source(
        "password_file = \"ftp-password\"\ncertificate_fingerprint = \"SHA256:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89\"\npoll_cron = \"0 7 * * 1-5\"\nlisting = \"list\"\ndata_mode = \"extended_passive\"",
    );
    let config = Config::parse(&dir.path().join("dropgate.toml"), &text).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let SourceKind::Remote(remote) = &config.sources["pull"].kind else {
        panic!("a remote source");
    };
    let crate::remote::Endpoint::Ftp(ftp) = &remote.endpoint else {
        panic!("an FTP endpoint");
    };
    assert_eq!(ftp.password.expose(), "secret");
    assert!(
        !format!("{config:?}").contains("secret"),
        "Debug hides the password"
    );
    assert_eq!(ftp.port, 21);
    assert!(ftp.tls.as_ref().is_some_and(|t| !t.implicit));
    assert_eq!(ftp.listing, crate::remote::ftp::Listing::List);
    assert_eq!(ftp.data, crate::remote::ftp::DataMode::ExtendedPassive);
    assert_eq!(
        remote.schedule.to_string(),
        "cron `0 7 * * 1-5` (Europe/London)"
    );
    assert_eq!(
        remote.endpoint.to_string(),
        "ftps://care@ftp.example.org:21/"
    );
}

#[test]
fn ftp_login_mistakes_are_reported_where_they_are() {
    let got = ftp_errors(
        "password = \"hunter2\"\ntls = \"implicit\"\nca_file = \"missing.pem\"\ncertificate_fingerprint = \"AB:CD\"\nprivate_key = \"k\"",
    );
    let all = got.join("\n");
    assert!(
        all.contains("passwords are not written in the configuration"),
        "{all}"
    );
    assert!(!all.contains("hunter2"), "{all}");
    assert!(
        all.contains("needs `password_file` or `password_env`"),
        "{all}"
    );
    assert!(
        all.contains("`private_key` does not apply to kind `ftp`"),
        "{all}"
    );
    assert!(
        all.contains("set `ca_file` or `certificate_fingerprint`, not both"),
        "{all}"
    );

    let got = ftp_errors(
        "password_file = \"ftp-password\"\ncertificate_fingerprint = \"AB:CD\"\npoll_cron = \"0 7 * *\"\ndata_mode = \"sideways\"",
    );
    let all = got.join("\n");
    assert!(
        all.contains("certificate_fingerprint must be a SHA-256 fingerprint"),
        "{all}"
    );
    assert!(all.contains("has 4 fields"), "{all}");
    assert!(all.contains("unknown data_mode `sideways`"), "{all}");

    let got = ftp_errors(
        "password_file = \"nowhere\"\ntls = \"none\"\npoll_interval = \"1m\"\npoll_cron = \"0 7 * * *\"",
    );
    let all = got.join("\n");
    assert!(all.contains("cannot read password file"), "{all}");
    assert!(
        all.contains("also set `insecure_plaintext = true`"),
        "{all}"
    );
    assert!(
        all.contains("set `poll_interval` or `poll_cron`, not both"),
        "{all}"
    );
    assert!(got.iter().all(|e| e.contains("dropgate.toml:")), "{all}");
}

#[test]
fn plain_ftp_is_warned_about_and_a_shared_password_file_refused() {
    let (dir, text) = with_ftp_source(
        "password_file = \"ftp-password\"\ntls = \"none\"\ninsecure_plaintext = true",
    );
    let config = Config::parse(&dir.path().join("dropgate.toml"), &text).unwrap();
    let warnings: Vec<String> = config.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("plain FTP"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("ftp-password"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let errors = Config::parse(&dir.path().join("dropgate.toml"), &text).unwrap_err();
    assert!(
        errors
            .to_string()
            .contains("can be read by other users (mode 644); run `chmod 600"),
        "{errors}"
    );
}

#[test]
fn caps_on_hostile_input_are_checked_and_default_sanely() {
    let config = Config::parse(Path::new("/opt/dg/config/dropgate.toml"), SHIPPED).unwrap();
    let schema = &config.feeds["news2"].schema;
    assert_eq!(schema.max_record_bytes, 1 << 20);
    assert_eq!(schema.max_field_bytes, 256 << 10);
    let sftp = config.sftp_server.unwrap();
    assert_eq!(sftp.max_handles_per_session, 64);
    assert_eq!(sftp.max_unfinished_uploads, 256);
    assert_eq!(sftp.max_unfinished_bytes, 20 << 30);
    assert_eq!(sftp.unfinished_upload_ttl, Duration::from_secs(24 * 3600));

    let text = SHIPPED
        .replace(
            "on_error = \"reject_file\"",
            "on_error = \"reject_file\"\nmax_record_size = \"lots\"\nmax_field_size = \"2GiB\"",
        )
        .replace(
            "idle_timeout = \"10m\"",
            "idle_timeout = \"10m\"\nmax_unfinished_size = \"1GiB\"\nlogin_timeout = \"0s\"\nmax_handles_per_session = 0",
        );
    let got = errors(&text);
    for expected in [
        format!(
            "{}: `lots` is not a size like `1MiB`",
            at(&text, "\"lots\"")
        ),
        format!(
            "{}: max_field_size must be between 1 byte and 1GiB",
            at(&text, "\"2GiB\"")
        ),
        format!(
            "{}: max_unfinished_size must be at least max_file_size (10GiB)",
            at(&text, "\"1GiB\"")
        ),
        format!("{}: login_timeout must be above zero", at(&text, "\"0s\"")),
        "max_handles_per_session must be between 1 and 1000000".to_string(),
    ] {
        assert!(
            got.iter().any(|e| e.contains(&expected)),
            "{expected} not in {got:#?}"
        );
    }
}

/// The shipped config with one column more, appended to its NEWS2 feed.
fn with_column(column: &str) -> String {
    let anchor = "[[feeds.news2.columns]]\nname = \"resident_id\"";
    assert!(SHIPPED.contains(anchor));
    SHIPPED.replacen(
        anchor,
        &format!("[[feeds.news2.columns]]\n{column}\n\n{anchor}"),
        1,
    )
}

fn column_of(config: &Config, name: &str) -> ColumnSpec {
    config.feeds["news2"]
        .schema
        .columns
        .iter()
        .find(|c| c.name == name)
        .cloned()
        .expect("the column")
}

#[test]
fn contact_details_are_always_identifiers_and_scale_is_for_decimals() {
    for kind in ["postcode", "email", "phone"] {
        let text = with_column(&format!("name = \"extra\"\ntype = \"{kind}\""));
        let config = Config::parse(Path::new("/opt/dg/config/dropgate.toml"), &text).unwrap();
        assert!(column_of(&config, "extra").identifier, "{kind}");
    }
    let text = with_column("name = \"extra\"\ntype = \"ods_code\"");
    let config = Config::parse(Path::new("/opt/dg/config/dropgate.toml"), &text).unwrap();
    assert!(!column_of(&config, "extra").identifier);

    let text = with_column("name = \"extra\"\ntype = \"integer\"\nscale = 2");
    let got = errors(&text);
    assert!(
        got.iter()
            .any(|e| e.contains("column `extra`: `scale` does not apply to type `integer`")),
        "{got:?}"
    );
    let text = with_column("name = \"extra\"\ntype = \"decimal\"\nscale = 19");
    let (line, column) = line_column(&text, text.find("scale = 19").unwrap() + "scale = ".len());
    assert_eq!(
        errors(&text),
        [format!(
            "/etc/dropgate/dropgate.toml:{line}:{column}: scale must be 0 to 18 digits"
        )]
    );
}

#[test]
fn a_code_list_can_live_in_a_file_next_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ethnicity.csv"),
        "code,label\n# NHS data dictionary, ethnic category\nA,White - British\n\"B\",\"White - Irish\"\n\nZ , Not stated\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("plain.txt"), "X1\nX2\n").unwrap();
    let config_path = dir.path().join("dropgate.toml");

    let text = with_column("name = \"extra\"\ntype = \"code\"\nvalues_file = \"ethnicity.csv\"");
    let config = Config::parse(&config_path, &text).unwrap();
    let ColumnKind::Code { values, .. } = column_of(&config, "extra").kind else {
        panic!("a code column");
    };
    assert_eq!(values.codes(), ["A", "B", "Z"]);

    let text = with_column("name = \"extra\"\ntype = \"code\"\nvalues_file = \"plain.txt\"");
    let config = Config::parse(&config_path, &text).unwrap();
    let ColumnKind::Code { values, .. } = column_of(&config, "extra").kind else {
        panic!("a code column");
    };
    assert_eq!(values.codes(), ["X1", "X2"]);

    let text = with_column("name = \"extra\"\ntype = \"code\"\nvalues_file = \"missing.csv\"");
    let got = match Config::parse(&config_path, &text) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors.iter().map(|e| e.to_string()).collect(),
    };
    assert!(
        got.iter().any(|e| e.contains(&format!(
            ":{}: column `extra`: cannot read",
            at(&text, "\"missing.csv\"")
        ))),
        "{got:?}"
    );

    let text = with_column(
        "name = \"extra\"\ntype = \"code\"\nvalues = [\"A\"]\nvalues_file = \"plain.txt\"",
    );
    let got = errors(&text);
    assert!(
        got.iter()
            .any(|e| e.contains("give `values` or `values_file`, not both")),
        "{got:?}"
    );
}

#[test]
fn files_without_a_header_take_columns_by_position_or_in_declared_order() {
    let headerless = SHIPPED.replacen(
        "[feeds.news2.csv]\n",
        "[feeds.news2.csv]\nheader = false\n",
        1,
    );
    let config = Config::parse(Path::new("/opt/dg/config/dropgate.toml"), &headerless).unwrap();
    let Layout::Csv(layout) = &config.feeds["news2"].schema.layout else {
        panic!("a CSV feed");
    };
    let positions = layout.positions.as_ref().expect("by position");
    assert_eq!(positions.len(), 14);
    assert!(positions.iter().enumerate().all(|(i, c)| *c == Some(i)));

    let one_placed = headerless.replacen(
        "name = \"resident_id\"\n",
        "name = \"resident_id\"\nposition = 20\n",
        1,
    );
    let got = errors(&one_placed);
    assert!(
        got.iter()
            .any(|e| e.contains("give every column a `position`, or none")),
        "{got:?}"
    );

    let placed_with_header = SHIPPED.replacen(
        "name = \"resident_id\"\n",
        "name = \"resident_id\"\nposition = 1\n",
        1,
    );
    let got = errors(&placed_with_header);
    assert!(
        got.iter()
            .any(|e| e.contains("`position` applies only to files without a header")),
        "{got:?}"
    );
}

#[test]
fn loose_header_matching_refuses_columns_it_could_not_tell_apart() {
    let text = with_column("name = \"Resident ID\"\ntype = \"string\"").replacen(
        "[feeds.news2.csv]\n",
        "[feeds.news2.csv]\nheader_match = \"loose\"\nmissing_columns = \"allow\"\n",
        1,
    );
    let text = text.replacen("name = \"resident_id\"", "name = \"residentid\"", 1);
    let got = errors(&text);
    assert!(
        got.iter()
            .any(|e| e.contains("column `residentid` is declared twice (ignoring case and spaces)")),
        "{got:?}"
    );
    let text = SHIPPED.replacen(
        "[feeds.news2.csv]\n",
        "[feeds.news2.csv]\nheader = false\nheader_match = \"loose\"\n",
        1,
    );
    let got = errors(&text);
    assert!(
        got.iter()
            .any(|e| e.contains("`header_match` applies only to files with a header")),
        "{got:?}"
    );
}

#[test]
fn trailer_records_are_checked_against_the_columns() {
    let framed = SHIPPED.replacen(
        "[feeds.news2.csv]\n",
        "[feeds.news2.csv.header_record]\ntag = \"HDR\"\n\n\
         [[feeds.news2.csv.header_record.fields]]\nname = \"extract_date\"\ntype = \"date\"\nformat = \"%Y%m%d\"\nposition = 3\nrequired = true\n\n\
         [feeds.news2.csv.trailer_record]\ntag = \"TRL\"\ncount_field = 2\ntotal_field = 3\ntotal_of = \"pulse\"\n\n\
         [feeds.news2.csv]\n",
        1,
    );
    let config = Config::parse(Path::new("/opt/dg/config/dropgate.toml"), &framed).unwrap();
    let Layout::Csv(layout) = &config.feeds["news2"].schema.layout else {
        panic!("a CSV feed");
    };
    let trailer = layout.trailer_record.as_ref().unwrap();
    assert_eq!(
        (trailer.tag.as_deref(), trailer.count_field),
        (Some("TRL"), Some(1))
    );
    let header_record = layout.header_record.as_ref().unwrap();
    assert_eq!(header_record.tag.as_deref(), Some("HDR"));
    assert_eq!(header_record.fields.len(), 1);
    assert_eq!(header_record.fields[0].0, 2);
    // Its field is a column of every record, after the data's: rules name it.
    let schema = &config.feeds["news2"].schema;
    assert_eq!(header_record.first_column, 14);
    assert_eq!(schema.data_columns(), 14);
    assert_eq!(schema.columns[14].name, "extract_date");
    let with_rule = framed.replacen(
        "[feeds.news2.map.service_user]",
        "[[feeds.news2.rules]]\nage_of = \"date_of_birth\"\non = \"extract_date\"\nmin_years = 18\n\n[feeds.news2.map.service_user]",
        1,
    );
    let config = Config::parse(Path::new("/opt/dg/config/dropgate.toml"), &with_rule).unwrap();
    assert_eq!(config.feeds["news2"].schema.rules.len(), 1);
    // The day the file was received is a column of its own once a rule names it.
    let on_received = SHIPPED.replacen(
        "[feeds.news2.map.service_user]",
        "[[feeds.news2.rules]]\nage_of = \"date_of_birth\"\non = \"@received\"\nmax_years = 120\n\n[feeds.news2.map.service_user]",
        1,
    );
    let config = Config::parse(Path::new("/opt/dg/config/dropgate.toml"), &on_received).unwrap();
    let schema = &config.feeds["news2"].schema;
    assert_eq!(schema.received_column, Some(14));
    assert_eq!(schema.data_columns(), 14);
    assert!(matches!(schema.rules[0], Rule::Age { on: 14, .. }));
    let clash = framed.replacen("name = \"extract_date\"", "name = \"pulse\"", 1);
    let got = errors(&clash);
    assert!(
        got.iter()
            .any(|e| e.contains("header record field `pulse` has the name of a column")),
        "{got:?}"
    );
    let twice = framed.replacen(
        "position = 3\nrequired = true\n",
        "position = 3\nrequired = true\n\n[[feeds.news2.csv.header_record.fields]]\nname = \"sender\"\ntype = \"ods_code\"\nposition = 3\n",
        1,
    );
    let got = errors(&twice);
    assert!(
        got.iter().any(|e| e
            .contains("header record fields `extract_date` and `sender` are both at position 3")),
        "{got:?}"
    );
    let on_tag = framed.replacen("position = 3", "position = 1", 1);
    let got = errors(&on_tag);
    assert!(
        got.iter()
            .any(|e| e.contains("field 1 of a tagged header record is its tag")),
        "{got:?}"
    );

    let not_numeric = framed.replacen("total_of = \"pulse\"", "total_of = \"gender\"", 1);
    let got = errors(&not_numeric);
    assert!(
        got.iter()
            .any(|e| e.contains("`total_of`: column `gender` is not a number")),
        "{got:?}"
    );
    let half = framed.replacen("total_field = 3\n", "", 1);
    let got = errors(&half);
    assert!(
        got.iter()
            .any(|e| e.contains("give `total_field` and `total_of` together")),
        "{got:?}"
    );
    let tag_field = framed.replacen("count_field = 2", "count_field = 1", 1);
    let got = errors(&tag_field);
    assert!(
        got.iter().any(|e| e.contains("field 1 is the tag")),
        "{got:?}"
    );
}

/// The shipped config with `rules` appended to its NEWS2 feed.
fn with_rules(rules: &str) -> String {
    let anchor = "[feeds.news2.map.service_user]";
    assert!(SHIPPED.contains(anchor));
    SHIPPED.replacen(anchor, &format!("{rules}\n\n{anchor}"), 1)
}

#[test]
fn rules_name_columns_of_the_feed_and_compare_only_what_compares() {
    let text = with_rules(
        "[[feeds.news2.rules]]\nrequire = \"nhs_number\"\nwhen = \"gender\"\nis = [\"1\", \"2\"]\n\n\
         [[feeds.news2.rules]]\nforbid = \"spo2\"\nwhen = \"on_oxygen\"\nis_empty = true\n\n\
         [[feeds.news2.rules]]\ncheck = \"observed_at >= date_of_birth\"",
    );
    let config = Config::parse(Path::new("/opt/dg/config/dropgate.toml"), &text).unwrap();
    let rules = &config.feeds["news2"].schema.rules;
    assert_eq!(rules.len(), 3);
    assert!(matches!(
        rules[2],
        Rule::Compare {
            op: Comparison::GreaterOrEqual,
            ..
        }
    ));

    for (rule, expected) in [
        (
            "[[feeds.news2.rules]]\nrequire = \"nhs_numbr\"\nwhen = \"gender\"\nis = [\"1\"]",
            "no column `nhs_numbr` in this feed",
        ),
        (
            "[[feeds.news2.rules]]\nrequire = \"nhs_number\"\nwhen = \"gender\"",
            "`when` needs one of `is`, `is_not` (a non-empty list) or `is_empty`",
        ),
        (
            "[[feeds.news2.rules]]\nrequire = \"nhs_number\"\nis = [\"1\"]",
            "a `require` or `forbid` rule needs `when`",
        ),
        (
            "[[feeds.news2.rules]]\ncheck = \"pulse >= date_of_birth\"",
            "`check`: a column of type integer cannot be compared with one of type date (`>=`)",
        ),
        (
            "[[feeds.news2.rules]]\nage_of = \"date_of_birth\"\non = \"gender\"\nmax_years = 120",
            "`gender` is not a date column",
        ),
        (
            "[[feeds.news2.rules]]\nage_of = \"date_of_birth\"\non = \"observed_at\"",
            "an `age_of` rule needs `min_years`, `max_years` or both",
        ),
        (
            "[[feeds.news2.rules]]\ncheck = \"pulse >= spo2\"\non = \"observed_at\"",
            "`on` applies only to an `age_of` rule",
        ),
        (
            "[[feeds.news2.rules]]\ncheck = \"pulse>=spo2\"",
            "a `check` is `LEFT OP RIGHT`",
        ),
        (
            "[[feeds.news2.rules]]\nrequire = \"pulse\"\ncheck = \"pulse >= spo2\"",
            "a rule has one of `require`, `forbid`, `check` or `age_of`",
        ),
    ] {
        let got = errors(&with_rules(rule));
        assert!(got.iter().any(|e| e.contains(expected)), "{rule}: {got:?}");
    }
}

/// The shipped config with a fixed-width feed `gp` added.
fn with_fixed_feed(columns: &str) -> String {
    format!(
        "{SHIPPED}\n[feeds.gp]\npartner = \"demo-carehome\"\nmatch = [\"gp_*.txt\"]\nencryption = \"none\"\nformat = \"fixed\"\n\n\
         [feeds.gp.fixed]\nencoding = \"windows-1252\"\n\n{columns}"
    )
}

#[test]
fn a_fixed_width_feed_has_header_and_trailer_lines_whose_fields_are_at_characters() {
    let framing = "[feeds.gp.fixed.header_record]\ntag = \"HDR\"\n\n\
         [[feeds.gp.fixed.header_record.fields]]\nname = \"extract_date\"\ntype = \"date\"\nformat = \"%Y%m%d\"\nstart = 4\nlength = 8\n\n\
         [feeds.gp.fixed.trailer_record]\ntag = \"TRL\"\ncount = { start = 4, length = 6 }\ntotal = { start = 10, end = 19 }\ntotal_of = \"qty\"\n\n";
    let columns = "[[feeds.gp.columns]]\nname = \"nhs\"\ntype = \"nhs_number\"\nstart = 1\nlength = 10\n\n\
         [[feeds.gp.columns]]\nname = \"qty\"\ntype = \"integer\"\nstart = 11\nlength = 4\n\n\
         [[feeds.gp.rules]]\ncheck = \"extract_date >= extract_date\"";
    let text = with_fixed_feed(&format!("{framing}{columns}"));
    let config = Config::parse(Path::new("/opt/dg/config/dropgate.toml"), &text).unwrap();
    let schema = &config.feeds["gp"].schema;
    let Layout::Fixed(layout) = &schema.layout else {
        panic!("a fixed-width feed");
    };
    let header = layout.header_record.as_ref().unwrap();
    assert_eq!(header.spans, [(3, 8)]);
    assert_eq!(header.record.first_column, 2);
    assert_eq!(schema.data_columns(), 2);
    assert_eq!(schema.columns[2].name, "extract_date");
    let trailer = layout.trailer_record.as_ref().unwrap();
    assert_eq!(trailer.spans, [(3, 6), (9, 10)]);
    assert_eq!(trailer.record.count_field, Some(0));
    assert_eq!(trailer.record.total, Some((1, 1)));
    for (broken, expected) in [
        (
            framing.replace("total_of = \"qty\"", "total_of = \"nhs\""),
            "`total_of`: column `nhs` is not a number",
        ),
        (
            framing.replace("total = { start = 10, end = 19 }\n", ""),
            "give `total` and `total_of` together",
        ),
        (
            framing.replace("count = { start = 4, length = 6 }", "count = { start = 4 }"),
            "trailer field: give `length` or `end`, one of them",
        ),
        (
            framing.replace("name = \"extract_date\"", "name = \"qty\""),
            "header record field `qty` has the name of a column",
        ),
    ] {
        let got = errors(&with_fixed_feed(&format!("{broken}{columns}")));
        assert!(
            got.iter().any(|e| e.contains(expected)),
            "{expected}: {got:?}"
        );
    }
}

#[test]
fn fixed_width_columns_have_start_and_length_or_end_and_never_overlap() {
    let text = with_fixed_feed(
        "[[feeds.gp.columns]]\nname = \"nhs\"\ntype = \"nhs_number\"\nstart = 1\nlength = 10\n\n\
         [[feeds.gp.columns]]\nname = \"ods\"\ntype = \"ods_code\"\nstart = 11\nend = 16",
    );
    let config = Config::parse(Path::new("/opt/dg/config/dropgate.toml"), &text).unwrap();
    let feed = &config.feeds["gp"];
    let Layout::Fixed(layout) = &feed.schema.layout else {
        panic!("a fixed-width feed");
    };
    assert_eq!(layout.spans, [(0, 10), (10, 6)]);
    assert!(layout.trim);
    assert_eq!(feed.schema.encoding, Encoding::Windows1252);

    for (columns, expected) in [
        (
            "[[feeds.gp.columns]]\nname = \"a\"\ntype = \"string\"\nstart = 1\nlength = 10\n\n\
             [[feeds.gp.columns]]\nname = \"b\"\ntype = \"string\"\nstart = 10\nlength = 2",
            "fixed-width columns `a` and `b` overlap",
        ),
        (
            "[[feeds.gp.columns]]\nname = \"a\"\ntype = \"string\"\nstart = 1",
            "column `a`: give `length` or `end`, one of them",
        ),
        (
            "[[feeds.gp.columns]]\nname = \"a\"\ntype = \"string\"",
            "column `a`: a fixed-width column needs `start` and `length` (or `end`)",
        ),
        (
            "[[feeds.gp.columns]]\nname = \"a\"\ntype = \"string\"\nstart = 5\nend = 4",
            "`end` is at or after `start`",
        ),
    ] {
        let got = errors(&with_fixed_feed(columns));
        assert!(
            got.iter().any(|e| e.contains(expected)),
            "{columns}: {got:?}"
        );
    }

    let csv_with_start = SHIPPED.replacen(
        "name = \"resident_id\"\n",
        "name = \"resident_id\"\nstart = 1\n",
        1,
    );
    let got = errors(&csv_with_start);
    assert!(
        got.iter()
            .any(|e| e.contains("`start` applies only to `format = \"fixed\"`")),
        "{got:?}"
    );
}

/// The shipped config with an XML feed `bag` added.
fn with_xml_feed(section: &str, columns: &str) -> String {
    format!(
        "{SHIPPED}\n[feeds.bag]\npartner = \"demo-carehome\"\nmatch = [\"bag_*.xml\"]\nencryption = \"none\"\nformat = \"xml\"\n\n\
         [feeds.bag.xml]\n{section}\n\n{columns}"
    )
}

#[test]
fn xml_paths_name_elements_and_a_last_attribute_with_the_feeds_prefixes() {
    use crate::schema::XmlName;
    let section = "record = \"/b:Bag/b:Item\"\nnamespaces = { b = \"urn:b\" }\nmax_depth = 10";
    let text = with_xml_feed(
        section,
        "[[feeds.bag.columns]]\nname = \"id\"\npath = \"@id\"\ntype = \"string\"\n\n\
         [[feeds.bag.columns]]\nname = \"family\"\npath = \"b:Name/b:Family\"\ntype = \"string\"\n\n\
         [[feeds.bag.columns]]\nname = \"Note\"\ntype = \"string\"",
    );
    let config = Config::parse(Path::new("/opt/dg/config/dropgate.toml"), &text).unwrap();
    let Layout::Xml(layout) = &config.feeds["bag"].schema.layout else {
        panic!("an XML feed");
    };
    let b = |local: &str| XmlName {
        namespace: Some("urn:b".into()),
        local: local.into(),
    };
    assert_eq!(layout.record, [b("Bag"), b("Item")]);
    assert_eq!(layout.max_depth, 10);
    assert_eq!(layout.paths[0].attribute.as_ref().unwrap().local, "id");
    assert_eq!(layout.paths[1].elements, [b("Name"), b("Family")]);
    assert_eq!(
        layout.paths[2].elements[0].local, "Note",
        "no path: a child named as the column"
    );

    // Columns under the repeating group are the group element's own.
    let text = with_xml_feed(
        &format!("{section}\nrepeat = \"b:Meds/b:Med\""),
        "[[feeds.bag.columns]]\nname = \"id\"\npath = \"@id\"\ntype = \"string\"\n\n\
         [[feeds.bag.columns]]\nname = \"code\"\npath = \"b:Meds/b:Med/@code\"\ntype = \"string\"",
    );
    let config = Config::parse(Path::new("/opt/dg/config/dropgate.toml"), &text).unwrap();
    let Layout::Xml(layout) = &config.feeds["bag"].schema.layout else {
        panic!("an XML feed");
    };
    assert_eq!(layout.repeat, [b("Meds"), b("Med")]);
    assert_eq!(layout.in_repeat, [false, true]);
    assert!(layout.paths[1].elements.is_empty());

    let column = |path: &str| {
        format!("[[feeds.bag.columns]]\nname = \"a\"\npath = \"{path}\"\ntype = \"string\"")
    };
    for (section, columns, expected) in [
        (
            section,
            column("x:Name"),
            "prefix `x` is not in `[feeds.NAME.xml] namespaces`",
        ),
        (
            section,
            column("@id/b:Name"),
            "`@attribute` comes last in a column's `path`",
        ),
        (section, column("b:Na me"), "is not a path of XML names"),
        (
            section,
            "[[feeds.bag.columns]]\nname = \"a\"\nstart = 1\ntype = \"string\"".to_string(),
            "`start` does not apply to an XML column",
        ),
        (
            "record = \"/\"",
            column("a"),
            "`record` names at least the root element",
        ),
        (
            &format!("{section}\nmax_attributes = 0"),
            column("a"),
            "`max_attributes` is 1 to 1024",
        ),
    ] {
        let got = errors(&with_xml_feed(section, &columns));
        assert!(
            got.iter().any(|e| e.contains(expected)),
            "{columns}: {got:?}"
        );
    }
    let csv_path = SHIPPED.replace(
        "name = \"gender\"\ntype = \"code\"",
        "name = \"gender\"\npath = \"@g\"\ntype = \"code\"",
    );
    assert!(
        errors(&csv_path)
            .iter()
            .any(|e| e.contains("`path` applies only to `format = \"xml\"`"))
    );
}

/// The shipped config with `section` added after the news2 feed's mapping.
fn with_map(section: &str) -> String {
    let anchor = "news2 = true\n";
    assert!(SHIPPED.contains(anchor));
    SHIPPED.replacen(anchor, &format!("{anchor}\n{section}\n"), 1)
}

#[test]
fn a_coded_record_field_takes_only_dropgates_codes() {
    let cases = [
        (
            "[feeds.news2.map.alert]\ntype = \"consciousness\"",
            "alert.type takes one of `allergy`, `safeguarding`, `risk`, `clinical`, `other`, but the column's code `A` is none of them: translate the column's codes, or give a `default`",
        ),
        (
            "[feeds.news2.map.alert]\ntype = { column = \"consciousness\", translate = { A = \"risk\" } }",
            "the column's code `C` is none of them: the translation does not give it one",
        ),
        (
            "[feeds.news2.map.alert]\ntype = { column = \"consciousness\", translate = { A = \"danger\" } }",
            "alert.type: translation `danger` is not one of",
        ),
        (
            "[feeds.news2.map.alert]\ntype = \"family_name\"",
            "alert.type takes one of `allergy`, `safeguarding`, `risk`, `clinical`, `other`: map a `code` column, `translate` it, or give a `default`",
        ),
        (
            "[feeds.news2.map.alert]\ntype = { value = \"allergy\" }\ncolour = \"gender\"",
            "map.alert: unknown field `colour`, expected `type`, `severity`, `description`, `start`, `end`, `when`, `key` or `updated_at`",
        ),
        (
            "[feeds.news2.map.alert]\nseverity = { value = \"high\" }",
            "map.alert needs `type`",
        ),
        (
            "[feeds.news2.map.alert]\ntype = { value = \"risk\" }\nstart = { value = \"2026-01-01\" }",
            "alert.start takes a date or datetime column, not a fixed `value`",
        ),
        (
            "[feeds.news2.map.alert]\ntype = { value = \"risk\" }\nstart = { column = \"observed_at\", default = \"x\" }",
            "alert.start takes a date or datetime column as it is: no `value`, `concat`, `translate` or `default`",
        ),
        (
            "[feeds.news2.map.alert]\ntype = { value = \"risk\" }\nstart = \"family_name\"",
            "alert.start needs a date or datetime column, but `family_name` is declared as",
        ),
        (
            "[feeds.news2.map.alert]\ntype = { value = \"risk\", column = \"gender\" }",
            "alert.type: give exactly one of `column`, `value` and `concat`",
        ),
        (
            "[feeds.news2.map.alert]\ntype = { value = \"risk\" }\nwhen = \"no_such\"",
            "alert.when names column `no_such`, which the feed does not declare",
        ),
        (
            "[feeds.news2.map.alert]\ntype = { value = \"risk\" }\ndescription = { concat = [\"family_name\", \"family_name\"] }",
            "column `family_name` is mapped twice: to alert.description and to alert.description",
        ),
        (
            "[feeds.news2.map.alert]\ntype = { value = \"risk\" }\nkey = \"resident_id\"",
            "map.alert: `key` is a list of column names",
        ),
        (
            "[feeds.news2.map.alert]\ntype = { value = \"risk\" }\nkey = [\"resident_id\"]\nupdated_at = \"family_name\"",
            "map.alert: `updated_at` names a date or datetime column",
        ),
        (
            "[feeds.news2.map.alert]\ntype = { value = \"risk\" }\nupdated_at = \"observed_at\"",
            "map.alert: `updated_at` orders the versions of a record: give its `key` too",
        ),
        (
            "[feeds.news2.map.alert]\ntype = { value = \"risk\" }\nkey = [\"resident_id\", \"nope\"]",
            "alert.key names column `nope`, which the feed does not declare",
        ),
        (
            "[feeds.news2.map.staff]\nstaff_id = \"resident_id\"\nkey = [\"resident_id\"]",
            "map.staff: a member of staff is one record per `staff_id`",
        ),
        (
            "[feeds.news2.map.alert]\ntype = [\"risk\"]",
            "alert.type takes a column name or a table, not a list",
        ),
    ];
    for (section, expected) in cases {
        let text = with_map(section);
        let got = errors(&text);
        assert!(
            got.iter().any(|e| e.contains(expected)),
            "{section}\n{got:#?}"
        );
    }
    // A code column fully translated, a join of two columns, and `when`.
    let text = with_map(
        r#"[feeds.news2.map.alert]
when = "consciousness"
type = { column = "consciousness", translate = { A = "risk", C = "clinical", V = "clinical", P = "clinical", U = "clinical" } }
description = { concat = ["family_name", "given_name"], separator = ", " }
start = "observed_at"
severity = { value = "high" }"#,
    );
    let config = Config::parse(Path::new("/etc/dropgate/dropgate.toml"), &text).unwrap();
    let mapping = &config.feeds["news2"].mapping;
    assert_eq!(mapping.care.len(), 1);
    let alert = &mapping.care[0];
    let columns = &config.feeds["news2"].schema.columns;
    let index = |name: &str| columns.iter().position(|c| c.name == name).unwrap();
    let mut values = vec![crate::validate::Value::Empty; columns.len()];
    values[index("consciousness")] = crate::validate::Value::Text("V".into());
    values[index("family_name")] = crate::validate::Value::Text("Smith".into());
    values[index("observed_at")] = crate::validate::Value::DateTime(
        chrono::DateTime::parse_from_rfc3339("2026-12-03T09:30:00+01:00").unwrap(),
    );
    let row = crate::validate::Row { line: 7, values };
    let record = crate::records::care::map(alert, &row).expect("a record");
    assert_eq!(
        record.values,
        [
            Some("clinical".into()),
            Some("high".into()),
            Some("Smith".into()),
            Some("2026-12-03T08:30:00Z".into()),
            None,
        ]
    );
    let mut quiet = row.clone();
    quiet.values[index("consciousness")] = crate::validate::Value::Empty;
    assert_eq!(
        crate::records::care::map(alert, &quiet),
        None,
        "`when` is empty"
    );
}

#[test]
fn an_observation_sets_key_names_declared_columns_and_its_time_is_a_date() {
    let keyed =
        |lines: &str| SHIPPED.replacen("news2 = true\n", &format!("news2 = true\n{lines}\n"), 1);
    assert_eq!(
        errors(&keyed(
            "key = [\"resident_id\", \"observed_at\"]\nupdated_at = \"observed_at\""
        )),
        Vec::<String>::new()
    );
    let cases = [
        ("key = [\"set_number\"]", "set_number"),
        ("key = []", "`key` is a list of column names"),
        ("updated_at = \"observed_at\"", "give its `key` too"),
        (
            "key = [\"observed_at\"]\nupdated_at = \"family_name\"",
            "`updated_at` names a date or datetime column",
        ),
    ];
    for (lines, expected) in cases {
        let got = errors(&keyed(lines));
        assert!(
            got.iter().any(|e| e.contains(expected)),
            "{lines}: {got:#?}"
        );
    }
}

#[test]
fn a_kind_about_a_person_needs_the_service_user_mapped_and_staff_do_not() {
    let text = with_map("[feeds.news2.map.alert]\ntype = { value = \"risk\" }")
        .replace("[feeds.news2.map.service_user]", "[feeds.news2.map.staff]")
        .replace("local_id = \"resident_id\"", "staff_id = \"resident_id\"")
        .replace("nhs_number = \"nhs_number\"\n", "")
        .replace("date_of_birth = \"date_of_birth\"\n", "")
        .replace("gender = \"gender\"\n", "")
        .replace("family_name = \"family_name\"\n", "")
        .replace("given_name = \"given_name\"\n", "name = \"given_name\"\n")
        .replace(
            "[feeds.news2.map.observations]",
            "[feeds.news2.map.ignored]",
        );
    let got = errors(&text);
    assert!(
        got.iter()
            .any(|e| e.contains("map.alert needs `map.service_user` to say whose it is")),
        "{got:#?}"
    );
    assert!(
        !got.iter().any(|e| e.contains("map.staff")),
        "staff stand alone: {got:#?}"
    );
}

#[test]
fn a_translation_can_live_in_a_file_next_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("acvpu.csv"),
        "source,target\n# ACVPU to alert types\nA,risk\n\"C\",clinical\nV,clinical\nP , clinical\nU,clinical\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("broken.csv"), "A,risk\nC\n").unwrap();
    let config_path = dir.path().join("dropgate.toml");
    let section = |file: &str| {
        with_map(&format!(
            "[feeds.news2.map.alert]\ntype = {{ column = \"consciousness\", translate_file = \"{file}\" }}"
        ))
    };
    let config = Config::parse(&config_path, &section("acvpu.csv")).unwrap();
    let crate::records::fields::Field::Column {
        translate: Some(table),
        ..
    } = config.feeds["news2"].mapping.care[0].fields[0]
        .clone()
        .unwrap()
    else {
        panic!("a translated column");
    };
    assert_eq!(table.len(), 5);
    assert_eq!(table["P"], "clinical");
    let errors = |file: &str| match Config::parse(&config_path, &section(file)) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    let got = errors("broken.csv");
    assert!(
        got.iter()
            .any(|e| e.contains("line 2 of broken.csv is not `source,target`")),
        "{got:#?}"
    );
    let got = errors("missing.csv");
    assert!(got.iter().any(|e| e.contains("cannot read")), "{got:#?}");
}

#[test]
fn the_http_listener_is_off_unless_configured_and_warned_about_beyond_loopback() {
    let path = Path::new("/opt/dg/config/dropgate.toml");
    let config = Config::parse(path, SHIPPED).unwrap();
    assert!(config.http.is_none());

    let config = Config::parse(path, &format!("{SHIPPED}\n[http]\n")).unwrap();
    assert_eq!(config.http.unwrap().listen.to_string(), "127.0.0.1:9187");
    assert!(config.warnings.is_empty());

    let text = format!("{SHIPPED}\n[http]\nlisten = \"0.0.0.0:9187\"\n");
    let config = Config::parse(path, &text).unwrap();
    let warnings: Vec<String> = config.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&at(&text, "\"0.0.0.0:9187\"")),
        "{warnings:?}"
    );

    let text = format!("{SHIPPED}\n[http]\nlisten = \"localhost\"\n");
    let got = errors(&text);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("is not an address"), "{got:?}");
    let got = errors(&format!("{SHIPPED}\n[http]\nport = 9187\n"));
    assert!(
        got.iter().any(|e| e.contains("unknown field `port`")),
        "{got:?}"
    );
}

#[test]
fn a_feeds_expectations_and_the_alert_sinks_are_checked_with_their_positions() {
    let path = Path::new("/opt/dg/config/dropgate.toml");
    let text = format!(
        "{SHIPPED}\n[feeds.news2.expect]\narrives_by = \"0 7 * * 1-5\"\nrow_count_band = 30\nquarantine_rate = 10\nquarantine_files = 20\n"
    );
    let config = Config::parse(path, &text).unwrap();
    let expect = &config.feeds["news2"].expect;
    let (_, within) = expect.arrives_by.as_ref().unwrap();
    assert_eq!(*within, std::time::Duration::from_secs(24 * 3600));
    assert_eq!(
        expect.row_count,
        Some(Band {
            percent: 30,
            files: 5
        })
    );
    assert_eq!(
        expect.quarantine_rate,
        Some(Band {
            percent: 10,
            files: 20
        })
    );

    let text = format!(
        "{SHIPPED}\n[feeds.news2.expect]\narrives_by = \"at seven\"\nrow_count_band = 0\nquarantine_files = 5\n\n[alerts]\ncommand = [\"notify-send\"]\ndestination = \"nowhere\"\n"
    );
    let got = errors(&text);
    assert_eq!(got.len(), 5, "{got:?}");
    for (needle, message) in [
        ("\"at seven\"", "arrives_by"),
        (
            "0\nquarantine_files",
            "row_count_band must be between 1 and 1000",
        ),
        (
            "5\n\n[alerts]",
            "`quarantine_files` needs `quarantine_rate`",
        ),
        ("[\"notify-send\"]", "must be an absolute path"),
        ("\"nowhere\"", "no destination `nowhere`"),
    ] {
        let position = format!(":{}: ", at(&text, needle));
        assert!(
            got.iter()
                .any(|e| e.contains(&position) && e.contains(message)),
            "{needle}: {got:?}"
        );
    }
}

#[test]
fn a_misspelt_key_or_section_is_answered_with_the_nearest_valid_one() {
    let text = SHIPPED
        .replace("retention_days = 90", "retension_days = 90")
        .replace("[sftp_server]", "[sftp_sever]");
    let got = errors(&text);
    assert!(
        got.iter().any(|e| e.contains(&at(&text, "retension_days"))
            && e.ends_with("did you mean `retention_days`?")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|e| e.contains("unknown section `sftp_sever`")
                && e.ends_with("did you mean `sftp_server`?")),
        "{got:?}"
    );
    // Nothing near enough: no guess.
    let got = errors(&SHIPPED.replace("retention_days = 90", "colour = 90"));
    assert!(got.iter().all(|e| !e.contains("did you mean")), "{got:?}");
}

#[test]
fn retention_days_resolve_feed_then_partner_then_daemon_and_bad_ones_are_placed() {
    let text = SHIPPED
        .replace(
            "[feeds.news2]\n",
            "[feeds.news2]\nrecord_retention_days = 400\n",
        )
        .replace(
            "[partners.demo-carehome]\n",
            "[partners.demo-carehome]\nretention_days = 30\n",
        );
    let config = Config::parse(Path::new("/opt/dg/config/dropgate.toml"), &text).unwrap();
    assert_eq!(config.payload_days("demo-carehome", Some("news2")), 30);
    assert_eq!(config.payload_days("demo-carehome", None), 30);
    assert_eq!(config.payload_days("demo-hospital", None), 90);
    assert_eq!(config.payload_days("gone", Some("gone")), 90);
    assert_eq!(config.shortest_payload_days(), 30);
    assert_eq!(config.feeds["news2"].record_retention_days, Some(400));
    let text = text.replace("[feeds.news2]\n", "[feeds.news2]\nretention_days = 7\n");
    let config = Config::parse(Path::new("/opt/dg/config/dropgate.toml"), &text).unwrap();
    assert_eq!(config.payload_days("demo-carehome", Some("news2")), 7);

    let text = SHIPPED
        .replace(
            "[feeds.news2]\n",
            "[feeds.news2]\nrecord_retention_days = 0\n",
        )
        .replace(
            "purge_cron = \"30 2 * * *\"",
            "purge_cron = \"30 25 * * *\"",
        );
    let got = errors(&text);
    let line = at(&text, "record_retention_days = 0");
    let line = line.split(':').next().unwrap();
    assert!(
        got.iter().any(|e| e.contains(&format!(":{line}:"))
            && e.ends_with("record_retention_days must be between 1 and 36500")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|e| e.contains(&at(&text, "\"30 25")) && e.contains("purge_cron")),
        "{got:?}"
    );
}

use super::*;
use crate::land::{self, Arrival, Landings, Origin};
use crate::ledger::SystemClock;

const SHIPPED: &str = include_str!("../../config/dropgate.toml");
const HEADER: &str = "resident_id,nhs_number,family_name,given_name,date_of_birth,gender,observed_at,respiration_rate,spo2,on_oxygen,systolic_bp,pulse,consciousness,temperature";

struct Setup {
    dir: tempfile::TempDir,
    config: Arc<Config>,
    ledger: Ledger,
    processor: Processor,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(&dir.path().join("config/dropgate.toml"), SHIPPED).unwrap();
    let spool = Spool::new(&config.daemon.spool);
    spool.ensure().unwrap();
    let ledger = Ledger::open(&config.daemon.ledger, Arc::new(SystemClock)).unwrap();
    let config = Arc::new(config);
    let processor = Processor::new(config.clone(), age::x25519::Identity::generate());
    Setup {
        dir,
        config,
        ledger,
        processor,
    }
}

impl Setup {
    fn land(&mut self, name: &str, body: &str) -> i64 {
        let path = self.dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        let origin = Origin {
            source: "demo-carehome-drop",
            partner: "demo-carehome",
            remove_sender: false,
            uploaded_from: None,
            landings: &Landings::default(),
        };
        let spool = Spool::new(&self.config.daemon.spool);
        let arrival = Arrival::copy(path, name.into());
        land::land(&self.config, &spool, &mut self.ledger, &origin, &[arrival])
            .pop()
            .unwrap()
            .unwrap()
            .id()
    }
}

#[test]
fn a_file_whose_problems_cannot_be_recorded_is_quarantined_and_the_queue_moves_on() {
    let mut s = setup();
    // Stands in for any failure to record a problem (the ledger once
    // refused a problem row as too big): recording this code fails.
    s.ledger
        .connection()
        .execute_batch(
            "CREATE TEMP TRIGGER refuse_problem BEFORE INSERT ON file_problems
             WHEN NEW.code = 'not_in_code_list'
             BEGIN SELECT RAISE(ABORT, 'cannot record this problem'); END;",
        )
        .unwrap();
    let bad = s.land(
        "news2_bad.csv",
        &format!("{HEADER}\nR1,,F,G,1940-01-01,7,2026-11-22T10:00:00Z,18,96,N,120,80,A,37.0\n"),
    );
    let good = s.land(
        "news2_good.csv",
        &format!("{HEADER}\nR2,,F,G,1940-01-01,1,2026-11-22T10:00:00Z,18,96,N,120,80,A,37.0\n"),
    );
    let pending = s.ledger.pending(10).unwrap();
    let done = s
        .processor
        .process(&mut s.ledger, pending, &AtomicBool::new(false))
        .unwrap();
    let states: Vec<(i64, FileState)> = done.iter().map(|p| (p.id, p.state)).collect();
    assert!(
        states.contains(&(bad, FileState::Quarantined)),
        "{states:?}"
    );
    assert!(states.contains(&(good, FileState::Loaded)), "{states:?}");
    let file = s.ledger.file(bad).unwrap();
    assert_eq!(file.reason.as_deref(), Some("internal_error"));
    let failed = s
        .ledger
        .events(bad)
        .unwrap()
        .iter()
        .filter(|e| e.event == "processing_failed")
        .count();
    assert_eq!(failed, MAX_FAILURES as usize);
    let problems = s.ledger.problems(bad).unwrap();
    assert!(problems[0].message.contains("cannot record this problem"));
    let spool = Spool::new(&s.config.daemon.spool);
    assert!(spool.report_path(&file.spool_name).exists());
    assert_eq!(
        spool.find(&file.spool_name).unwrap().0,
        crate::spool::Area::Quarantine
    );
}

#[test]
fn a_held_upload_reaches_the_spool_before_it_is_processed_even_after_a_crash() {
    let mut s = setup();
    let body =
        format!("{HEADER}\nR3,,F,G,1940-01-01,1,2026-11-22T10:00:00Z,18,96,N,120,80,A,37.0\n");
    let sha256 = crate::digest::hex(&<sha2::Sha256 as sha2::Digest>::digest(body.as_bytes()));
    let origin = Origin {
        source: "sftp-server",
        partner: "demo-carehome",
        remove_sender: true,
        uploaded_from: Some("127.0.0.1:50000"),
        landings: &Landings::default(),
    };
    let spool = Spool::new(&s.config.daemon.spool);
    let arrival = Arrival {
        path: s.dir.path().join("never-written"),
        name: "news2_held.csv".into(),
        handover: land::Handover::Held {
            body: body.clone().into_bytes(),
        },
        taken_from: None,
    };
    let id = land::land(&s.config, &spool, &mut s.ledger, &origin, &[arrival])
        .pop()
        .unwrap()
        .unwrap()
        .id();
    let file = s.ledger.file(id).unwrap();
    assert_eq!(
        (file.state, file.sha256.as_str()),
        (FileState::Received, sha256.as_str())
    );
    // Durable in the ledger alone: nothing in the spool, nothing to process.
    assert!(spool.find(&file.spool_name).is_none());
    assert!(s.ledger.pending(10).unwrap().is_empty());
    assert_eq!(s.ledger.held_payloads(usize::MAX).unwrap().len(), 1);
    // A write-out cut short by a crash left part of the copy behind.
    std::fs::write(
        spool.path(crate::spool::Area::Tmp, &file.spool_name),
        "resid",
    )
    .unwrap();

    let done = s
        .processor
        .drain(&mut s.ledger, &AtomicBool::new(false))
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].id, done[0].state), (id, FileState::Loaded));
    assert!(s.ledger.held_payloads(usize::MAX).unwrap().is_empty());
    let (area, path) = spool.find(&file.spool_name).unwrap();
    assert_eq!(area, crate::spool::Area::Archive);
    assert_eq!(std::fs::read_to_string(path).unwrap(), body);
}

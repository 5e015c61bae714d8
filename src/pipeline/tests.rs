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
        let arrival = Arrival::copy(path, name.into(), u64::MAX);
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
fn a_small_file_is_kept_in_the_ledger_and_written_to_the_spool_only_when_quarantined() {
    let mut s = setup();
    let good =
        format!("{HEADER}\nR3,,F,G,1940-01-01,1,2026-11-22T10:00:00Z,18,96,N,120,80,A,37.0\n");
    let bad =
        format!("{HEADER}\nR4,,F,G,1940-01-01,7,2026-11-22T10:00:00Z,18,96,N,120,80,A,37.0\n");
    let origin = Origin {
        source: "sftp-server",
        partner: "demo-carehome",
        remove_sender: true,
        uploaded_from: Some("127.0.0.1:50000"),
        landings: &Landings::default(),
    };
    let spool = Spool::new(&s.config.daemon.spool);
    let sender = s.dir.path().join("news2_dropped.csv");
    std::fs::write(&sender, &bad).unwrap();
    let arrivals = [
        // An upload the SFTP server held in memory.
        Arrival {
            path: s.dir.path().join("never-written"),
            name: "news2_held.csv".into(),
            handover: land::Handover::Held {
                body: good.clone().into_bytes(),
            },
            taken_from: None,
        },
        // A sender's small file, read whole.
        Arrival::copy(sender.clone(), "news2_dropped.csv".into(), u64::MAX),
    ];
    let ids: Vec<i64> = land::land(&s.config, &spool, &mut s.ledger, &origin, &arrivals)
        .into_iter()
        .map(|landed| landed.unwrap().id())
        .collect();
    assert!(!sender.exists(), "the sender's copy goes once received");
    for (id, body) in ids.iter().zip([&good, &bad]) {
        let file = s.ledger.file(*id).unwrap();
        let sha256 = crate::digest::hex(&<sha2::Sha256 as sha2::Digest>::digest(body.as_bytes()));
        assert_eq!(
            (file.state, file.sha256.as_str()),
            (FileState::Received, sha256.as_str())
        );
        // Durable in the ledger alone: nothing in the spool.
        assert!(spool.find(&file.spool_name).is_none());
    }
    assert_eq!(s.ledger.pending(10).unwrap().len(), 2);

    // The quarantine folder cannot be written: processing stops after the
    // commit, as a crash would, with the rejected file's bytes still only
    // in the ledger.
    let quarantine = spool.dir(crate::spool::Area::Quarantine);
    std::fs::remove_dir(&quarantine).unwrap();
    std::fs::write(&quarantine, "not a folder").unwrap();
    assert!(
        s.processor
            .drain(
                &mut s.ledger,
                &AtomicBool::new(false),
                &AtomicBool::new(false)
            )
            .is_err()
    );
    let (loaded, rejected) = (
        s.ledger.file(ids[0]).unwrap(),
        s.ledger.file(ids[1]).unwrap(),
    );
    assert_eq!(
        (loaded.state, rejected.state),
        (FileState::Loaded, FileState::Quarantined)
    );
    assert_eq!(s.ledger.held_and_quarantined().unwrap().len(), 1);

    // At the next start the rejected file joins its report.
    std::fs::remove_file(&quarantine).unwrap();
    std::fs::create_dir(&quarantine).unwrap();
    s.processor.settle_held_quarantined(&s.ledger).unwrap();
    let (area, path) = spool.find(&rejected.spool_name).unwrap();
    assert_eq!(area, crate::spool::Area::Quarantine);
    assert_eq!(std::fs::read_to_string(path).unwrap(), bad);
    assert!(spool.report_path(&rejected.spool_name).exists());
    assert!(s.ledger.held_and_quarantined().unwrap().is_empty());
    let held = s.ledger.held_bodies(&ids).unwrap();
    assert!(!held.contains_key(&ids[1]), "let go once in the spool");
    // The loaded file's archived copy is the ledger's.
    assert_eq!(&*held[&ids[0]], good.as_bytes());
    assert!(spool.find(&loaded.spool_name).is_none());
}

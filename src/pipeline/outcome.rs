//! How a file ends: its outcome from what reading found, and the report
//! written beside a quarantined file.

use super::*;

impl Processor {
    /// Decides a file's state from what its stages found.
    pub(super) fn judge(&self, feed: &Feed, attempt: Attempt) -> Outcome {
        let feed_name = Some(feed.name.clone());
        if let Some(failure) = attempt.failure {
            let (code, message) = match failure {
                Failure::Decrypt(e) => (e.code(), e.to_string()),
                Failure::Read(e) if attempt.encrypted => (
                    Code::CiphertextDamaged,
                    format!("the age ciphertext is truncated or has been altered: {e}"),
                ),
                Failure::Read(e) => (Code::ReadFailed, e.to_string()),
                Failure::Internal => (
                    Code::InternalError,
                    "dropgate failed on this file's content; the file is kept for `dropgate replay`, please report it".into(),
                ),
            };
            let reason = match code {
                Code::ReadFailed => Reason::ReadFailed,
                Code::InternalError => Reason::InternalError,
                _ => Reason::DecryptFailed,
            };
            return rejected(Some(feed), reason, file_problem(code, message));
        }
        let reject = !accepts(feed, &attempt);
        let detail = json!({
            "rows_read": attempt.rows_read,
            "rows_loaded": if reject { 0 } else { attempt.rows_loaded },
            "rows_invalid": attempt.rows_invalid,
            "records": if reject { 0 } else { attempt.records },
            "problems": attempt.problem_count,
            "encoding_fallback": attempt.encoding_changed,
        });
        if reject {
            return Outcome {
                state: FileState::Quarantined,
                feed: feed_name,
                reason: Some(Reason::ValidationFailed.to_string()),
                rows_read: Some(attempt.rows_read),
                rows_loaded: Some(0),
                records: 0,
                duplicate_of: None,
                problem_count: attempt.problem_count,
                problems: attempt.problems,
                detail,
            };
        }
        Outcome {
            state: FileState::Loaded,
            feed: feed_name,
            reason: None,
            rows_read: Some(attempt.rows_read),
            rows_loaded: Some(attempt.rows_loaded),
            records: attempt.records,
            duplicate_of: None,
            problem_count: attempt.problem_count,
            problems: attempt.problems,
            detail,
        }
    }
}

pub(super) fn file_problem(code: Code, message: String) -> Problem {
    Problem::file(0, code, message)
}

pub(super) fn duplicate(feed: &Feed, first: i64) -> Outcome {
    Outcome {
        state: FileState::Duplicate,
        feed: Some(feed.name.clone()),
        reason: None,
        rows_read: None,
        rows_loaded: None,
        records: 0,
        duplicate_of: Some(first),
        problem_count: 0,
        problems: Vec::new(),
        detail: json!({ "duplicate_of": first }),
    }
}

pub(super) fn payload_missing(feed: &Feed) -> Outcome {
    rejected(
        Some(feed),
        Reason::PayloadMissing,
        file_problem(
            Code::PayloadMissing,
            "the spool copy of this file is missing".into(),
        ),
    )
}

pub(super) fn rejected(feed: Option<&Feed>, reason: Reason, problem: Problem) -> Outcome {
    Outcome {
        state: FileState::Quarantined,
        feed: feed.map(|f| f.name.clone()),
        reason: Some(reason.to_string()),
        rows_read: None,
        rows_loaded: None,
        records: 0,
        duplicate_of: None,
        problem_count: 1,
        detail: json!({ "reason": reason.as_str(), "problem": problem.code }),
        problems: vec![problem],
    }
}

/// The machine-readable report written beside a quarantined file. The
/// sender's file name is not in it (it may carry an identifier); `dropgate
/// show` gives it to those allowed to read the ledger.
pub fn quarantine_report(ledger: &Ledger, id: i64) -> Result<serde_json::Value, LedgerError> {
    let file = ledger.file(id)?;
    let problems = ledger.problems(id)?;
    Ok(json!({
        "file_id": file.id,
        "source": file.source,
        "partner": file.partner,
        "feed": file.feed,
        "sha256": file.sha256,
        "size": file.size,
        "received_at": file.received_at,
        "quarantined_at": file.updated_at,
        "reason": file.reason,
        "rows_read": file.rows_read,
        "problem_count": file.problems,
        "problems_listed": problems.len(),
        "problems": problems,
        "replay": format!("dropgate replay {}", file.id),
    }))
}

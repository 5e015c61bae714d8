//! Plain values in the config: sizes, durations, ports, single characters.

use super::*;

impl Checker<'_> {
    /// A size like `1MiB`, at least one byte and at most `max`.
    pub(super) fn size(
        &mut self,
        value: Option<Spanned<String>>,
        default: u64,
        max: u64,
        what: &str,
    ) -> u64 {
        let Some(value) = value else {
            return default;
        };
        match parse_bytes(value.get_ref()) {
            Some(n) if (1..=max).contains(&n) => n,
            Some(_) => {
                self.at(
                    &value,
                    format!("{what} must be between 1 byte and {}", show_bytes(max)),
                );
                default
            }
            None => {
                self.at(
                    &value,
                    format!("`{}` is not a size like `1MiB` or `64KiB`", value.get_ref()),
                );
                default
            }
        }
    }

    pub(super) fn duration(
        &mut self,
        value: Option<Spanned<String>>,
        default: Duration,
    ) -> Duration {
        let Some(value) = value else {
            return default;
        };
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                self.at(
                    &value,
                    format!(
                        "`{}` is not a duration like `500ms` or `2s`: {e}",
                        value.get_ref()
                    ),
                );
                default
            }
        }
    }

    /// A duration that must be above zero (a wait or a time limit of zero
    /// would spin or fail every time).
    pub(super) fn positive_duration(
        &mut self,
        value: Option<Spanned<String>>,
        default: Duration,
        option: &str,
    ) -> Duration {
        let span = value.as_ref().map(|v| v.span());
        let duration = self.duration(value, default);
        if duration.is_zero() {
            self.error(span.unwrap_or(0..0), format!("{option} must be above zero"));
            return default;
        }
        duration
    }

    pub(super) fn port(&mut self, port: Option<Spanned<i64>>, default: u16) -> u16 {
        match &port {
            None => default,
            Some(p) if (1..=65535).contains(p.get_ref()) => *p.get_ref() as u16,
            Some(p) => {
                self.at(p, "port must be between 1 and 65535");
                default
            }
        }
    }

    pub(super) fn single_byte(
        &mut self,
        value: Option<Spanned<String>>,
        default: u8,
        what: &str,
    ) -> u8 {
        let Some(value) = value else {
            return default;
        };
        match value.get_ref().as_str() {
            "\\t" | "\t" | "tab" => b'\t',
            s if s.len() == 1 && s.is_ascii() => s.as_bytes()[0],
            s => {
                self.at(
                    &value,
                    format!("{what} must be one ASCII character, not `{s}`"),
                );
                default
            }
        }
    }
}

/// `10GiB`, `500MiB`, `64KiB`, `1000` (bytes); also `GB`/`MB`/`KB` as powers of 1000.
pub(super) fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// A byte count as an admin writes it: `1GiB`, `256KiB`, or bytes.
pub fn show_bytes(n: u64) -> String {
    for (unit, factor) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if n >= factor && n % factor == 0 {
            return format!("{}{unit}", n / factor);
        }
    }
    n.to_string()
}

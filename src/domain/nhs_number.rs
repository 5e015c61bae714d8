//! NHS number: ten digits whose last is a Modulus 11 check digit.

use std::fmt;

/// A checked NHS number, held as its ten digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NhsNumber([u8; 10]);

/// Why a value is not an NHS number. Never carries the value itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NhsNumberError {
    #[error("an NHS number has 10 digits (spaces and hyphens allowed)")]
    Format,
    #[error("the check digit cannot be 10, so this is not an NHS number")]
    CheckDigitTen,
    #[error("the check digit does not match (Modulus 11)")]
    CheckDigitMismatch,
    #[error("0000000000 is not an NHS number")]
    AllZero,
}

/// The Modulus 11 check digit of the first nine digits; `None` when it would
/// be 10, for then no NHS number starts with them.
pub fn check_digit(nine: &[u8; 9]) -> Option<u8> {
    let sum: u32 = nine
        .iter()
        .zip((2..=10).rev())
        .map(|(&d, w)| u32::from(d) * w)
        .sum();
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        c => Some(c as u8),
    }
}

/// The NHS number in the test range (999…, never issued to a person) whose
/// middle six digits are `middle`, unless its check digit would be 10.
pub fn test_range_number(middle: u32) -> Option<String> {
    let body = format!("999{:06}", middle % 1_000_000);
    let mut nine = [0u8; 9];
    for (d, b) in nine.iter_mut().zip(body.bytes()) {
        *d = b - b'0';
    }
    check_digit(&nine).map(|check| format!("{body}{check}"))
}

impl NhsNumber {
    /// Parses a number as found in legacy files: spaces and hyphens between digits are dropped.
    pub fn parse(text: &str) -> Result<NhsNumber, NhsNumberError> {
        let mut digits = [0u8; 10];
        let mut n = 0;
        for c in text.trim().chars() {
            match c {
                '0'..='9' => {
                    if n == 10 {
                        return Err(NhsNumberError::Format);
                    }
                    digits[n] = c as u8 - b'0';
                    n += 1;
                }
                ' ' | '-' => {}
                _ => return Err(NhsNumberError::Format),
            }
        }
        if n != 10 {
            return Err(NhsNumberError::Format);
        }
        let nine: [u8; 9] = digits[..9].try_into().expect("nine digits");
        let Some(check) = check_digit(&nine) else {
            return Err(NhsNumberError::CheckDigitTen);
        };
        if check != digits[9] {
            return Err(NhsNumberError::CheckDigitMismatch);
        }
        if digits == [0; 10] {
            return Err(NhsNumberError::AllZero);
        }
        Ok(NhsNumber(digits))
    }

    /// The number in the test range (999 000 0000 to 999 999 9999), never issued to a person.
    pub fn is_test_range(&self) -> bool {
        self.0[..3] == [9, 9, 9]
    }

    /// The ten digits without separators.
    pub fn digits(&self) -> String {
        self.0.iter().map(|d| char::from(b'0' + d)).collect()
    }
}

impl fmt::Display for NhsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.digits())
    }
}

/// Redacted, so a stray `{:?}` can never put a patient identifier into a log.
impl fmt::Debug for NhsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NhsNumber(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_is_valid() {
        let n = NhsNumber::parse("9434765919").unwrap();
        assert_eq!(n.digits(), "9434765919");
        assert!(!n.is_test_range());
    }

    #[test]
    fn spaces_and_hyphens_are_stripped() {
        assert_eq!(
            NhsNumber::parse("943 476 5919").unwrap().digits(),
            "9434765919"
        );
        assert_eq!(
            NhsNumber::parse("943-476-5919").unwrap().digits(),
            "9434765919"
        );
    }

    #[test]
    fn wrong_check_digit_is_rejected() {
        for last in (0..=9).filter(|d| *d != 9) {
            let text = format!("943476591{last}");
            assert_eq!(
                NhsNumber::parse(&text),
                Err(NhsNumberError::CheckDigitMismatch),
                "{text}"
            );
        }
    }

    #[test]
    fn check_digit_ten_is_invalid_whatever_the_last_digit() {
        // 1000000010: weights give 10*1 + 2*1 = 12, 12 mod 11 = 1, check = 10.
        for last in 0..=9 {
            let text = format!("100000001{last}");
            assert_eq!(
                NhsNumber::parse(&text),
                Err(NhsNumberError::CheckDigitTen),
                "{text}"
            );
        }
    }

    #[test]
    fn check_eleven_becomes_zero() {
        // 1 at position 2 (weight 9) and 1 at position 9 (weight 2): sum 11, check 11 -> 0.
        assert!(NhsNumber::parse("0100000010").is_ok());
        assert_eq!(
            NhsNumber::parse("0100000011"),
            Err(NhsNumberError::CheckDigitMismatch)
        );
    }

    #[test]
    fn leading_zero_is_allowed() {
        // 0000000019: weights give 2*1 = 2, 11 - 2 = 9.
        assert!(NhsNumber::parse("0000000019").is_ok());
    }

    #[test]
    fn all_zero_is_rejected() {
        assert_eq!(NhsNumber::parse("0000000000"), Err(NhsNumberError::AllZero));
    }

    #[test]
    fn wrong_length_and_letters_are_rejected() {
        for text in ["", "943476591", "94347659190", "94347659I9", "943.476.5919"] {
            assert_eq!(
                NhsNumber::parse(text),
                Err(NhsNumberError::Format),
                "{text}"
            );
        }
    }

    #[test]
    fn test_range_is_recognised() {
        let n = NhsNumber::parse("9990000018").unwrap();
        assert!(n.is_test_range());
    }

    #[test]
    fn debug_output_hides_the_number() {
        let n = NhsNumber::parse("9434765919").unwrap();
        assert!(!format!("{n:?}").contains("943"));
    }

    #[test]
    fn agrees_with_a_brute_force_definition() {
        // Independent statement of the rule, over a spread of numbers.
        for seed in 0u64..20_000 {
            let base = (seed * 7_919_213) % 1_000_000_000;
            let nine = format!("{base:09}");
            let sum: u32 = nine
                .bytes()
                .enumerate()
                .map(|(i, b)| u32::from(b - b'0') * (10 - i as u32))
                .sum();
            let r = 11 - (sum % 11);
            for last in 0..=9u32 {
                let text = format!("{nine}{last}");
                let expected_ok = match r {
                    11 => last == 0,
                    10 => false,
                    c => last == c,
                } && text != "0000000000";
                assert_eq!(NhsNumber::parse(&text).is_ok(), expected_ok, "{text}");
            }
        }
    }

    proptest::proptest! {
        /// Every nine digits whose check digit is not 10 make exactly one
        /// NHS number, however it is spaced.
        #[test]
        fn the_computed_check_digit_always_validates(
            nine in proptest::array::uniform9(0u8..10),
            spaced in proptest::bool::ANY,
        ) {
            proptest::prop_assume!(nine.iter().any(|&d| d != 0));
            let Some(check) = check_digit(&nine) else {
                return Ok(());
            };
            let digits: String = nine.iter().chain(std::iter::once(&check)).map(|d| char::from(b'0' + d)).collect();
            let text = if spaced {
                format!("{} {} {}", &digits[..3], &digits[3..6], &digits[6..])
            } else {
                digits.clone()
            };
            proptest::prop_assert_eq!(NhsNumber::parse(&text).map(|n| n.digits()), Ok(digits));
        }

        /// Modulus 11 catches every change of a single digit.
        #[test]
        fn any_one_digit_changed_is_refused(
            nine in proptest::array::uniform9(0u8..10),
            at in 0usize..10,
            by in 1u8..10,
        ) {
            let Some(check) = check_digit(&nine) else {
                return Ok(());
            };
            let mut ten: Vec<u8> = nine.iter().copied().chain(std::iter::once(check)).collect();
            ten[at] = (ten[at] + by) % 10;
            let text: String = ten.iter().map(|d| char::from(b'0' + d)).collect();
            proptest::prop_assert!(NhsNumber::parse(&text).is_err(), "{}", text);
        }
    }
}

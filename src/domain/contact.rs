//! Postcodes, organisation codes, e-mail addresses and telephone numbers:
//! each checked for its shape and put in one normal form, so the same value
//! written two ways is stored once. Errors never carry the value.

use compact_str::CompactString;

/// A UK postcode in its normal form: upper case, one space before the
/// inward code (`SW1A 1AA`). Spaces anywhere and lower case are accepted.
pub fn postcode(text: &str) -> Option<CompactString> {
    // At most eight characters: held inline when they are ASCII, as any
    // postcode is.
    let compact: CompactString = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .take(8)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if !(5..=7).contains(&compact.len()) || !compact.is_ascii() {
        return None;
    }
    let (outward, inward) = compact.split_at(compact.len() - 3);
    if compact == "GIR0AA" {
        return Some("GIR 0AA".into());
    }
    (valid_outward(outward.as_bytes()) && valid_inward(inward.as_bytes()))
        .then(|| compact_str::format_compact!("{outward} {inward}"))
}

/// `9AA`, the letters not C, I, K, M, O or V.
fn valid_inward(b: &[u8]) -> bool {
    let letter = |c: u8| c.is_ascii_uppercase() && !b"CIKMOV".contains(&c);
    b.len() == 3 && b[0].is_ascii_digit() && letter(b[1]) && letter(b[2])
}

/// `A9`, `A99`, `A9A`, `AA9`, `AA99` or `AA9A`, with the letters each
/// position allows.
fn valid_outward(b: &[u8]) -> bool {
    let first = |c: u8| c.is_ascii_uppercase() && !b"QVX".contains(&c);
    let second = |c: u8| c.is_ascii_uppercase() && !b"IJZ".contains(&c);
    let digit = |c: u8| c.is_ascii_digit();
    match *b {
        [a, n] => first(a) && digit(n),
        [a, n, m] if digit(n) && digit(m) => first(a),
        [a, n, l] if digit(n) => first(a) && b"ABCDEFGHJKPSTUW".contains(&l),
        [a, l, n] => first(a) && second(l) && digit(n),
        [a, l, n, m] if digit(m) => first(a) && second(l) && digit(n),
        [a, l, n, k] => first(a) && second(l) && digit(n) && b"ABEHMNPRVWXY".contains(&k),
        _ => false,
    }
}

/// An ODS organisation code: 3 to 10 letters and digits, in upper case.
pub fn ods_code(text: &str) -> Option<String> {
    let code = text.trim();
    ((3..=10).contains(&code.len()) && code.bytes().all(|c| c.is_ascii_alphanumeric()))
        .then(|| code.to_ascii_uppercase())
}

/// An e-mail address (`local@domain`, the domain with at least two labels),
/// the domain in lower case. Quoted local parts and address literals, which
/// care systems do not send, are refused.
pub fn email(text: &str) -> Option<String> {
    let address = text.trim();
    if address.len() > 254 {
        return None;
    }
    let (local, domain) = address.split_once('@')?;
    let local_ok = (1..=64).contains(&local.len())
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|c| c.is_ascii_alphabetic()));
    (local_ok && domain_ok).then(|| format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// A telephone number. UK numbers (`01234 567890`, `+44 (0)1234 567890`,
/// `0044 1234 567890`) become their ten or eleven national digits starting
/// with 0; other international numbers `+` and 8 to 15 digits.
pub fn phone(text: &str) -> Option<String> {
    let trimmed = text.trim();
    let international = trimmed.starts_with('+');
    let mut digits = String::with_capacity(trimmed.len());
    for c in trimmed.trim_start_matches('+').chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '(' | ')' | '.' => {}
            _ => return None,
        }
    }
    let uk = if international {
        digits.strip_prefix("44")
    } else {
        digits.strip_prefix("0044")
    };
    if let Some(rest) = uk {
        // `+44 (0)20 …` writes the trunk 0 that the country code replaces.
        let national = rest.strip_prefix('0').unwrap_or(rest);
        return ((9..=10).contains(&national.len())).then(|| format!("0{national}"));
    }
    if international {
        return ((8..=15).contains(&digits.len())).then(|| format!("+{digits}"));
    }
    (digits.starts_with('0') && (10..=11).contains(&digits.len())).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postcodes_in_every_outward_shape_are_normalised() {
        for (given, normal) in [
            ("M1 1AE", "M1 1AE"),
            ("b338th", "B33 8TH"),
            ("CR2 6XH", "CR2 6XH"),
            ("dn55 1pt", "DN55 1PT"),
            ("W1A 0AX", "W1A 0AX"),
            ("  ec1a1bb ", "EC1A 1BB"),
            ("GIR 0AA", "GIR 0AA"),
        ] {
            assert_eq!(postcode(given).as_deref(), Some(normal), "{given}");
        }
    }

    #[test]
    fn postcodes_with_letters_a_position_never_has_are_refused() {
        for bad in [
            "",
            "SW1A",
            "SW1A 1AAA",
            "Q1 1AA",
            "AI1 1AA",
            "M1 1CA",
            "M1 AAA",
            "11 1AA",
            "M1A1 1AA",
            "EC1Z 1BB",
            "SW1A-1AA",
            "ÄB1 1AA",
        ] {
            assert_eq!(postcode(bad), None, "{bad}");
        }
    }

    #[test]
    fn ods_codes_are_letters_and_digits_in_upper_case() {
        assert_eq!(ods_code(" rr8 ").as_deref(), Some("RR8"));
        assert_eq!(ods_code("A81001").as_deref(), Some("A81001"));
        for bad in ["", "R8", "RR-8", "RR 8", "ABCDEFGHIJK"] {
            assert_eq!(ods_code(bad), None, "{bad}");
        }
    }

    #[test]
    fn email_addresses_keep_their_local_part_and_lower_the_domain() {
        assert_eq!(
            email(" Care.Home+nhs@Example.NHS.UK ").as_deref(),
            Some("Care.Home+nhs@example.nhs.uk")
        );
        for bad in [
            "",
            "no-at-sign",
            "a@b",
            "a@@b.uk",
            "a@b.uk@c.uk",
            ".a@b.uk",
            "a..b@c.uk",
            "a b@c.uk",
            "a@-b.uk",
            "a@b.u",
            "a@b.12",
            "\"q\"@b.uk",
        ] {
            assert_eq!(email(bad), None, "{bad}");
        }
    }

    #[test]
    fn uk_phone_numbers_become_national_digits() {
        for (given, normal) in [
            ("01234 567890", "01234567890"),
            ("020 7946 0018", "02079460018"),
            ("+44 (0)20 7946 0018", "02079460018"),
            ("+44 7700 900123", "07700900123"),
            ("0044 1234 567890", "01234567890"),
            ("(01632) 960-001", "01632960001"),
            ("+353 1 234 5678", "+35312345678"),
        ] {
            assert_eq!(phone(given).as_deref(), Some(normal), "{given}");
        }
        for bad in [
            "",
            "12345",
            "1234567890",
            "01234 56789012",
            "0123x567890",
            "+1 23",
            "+44 12",
        ] {
            assert_eq!(phone(bad), None, "{bad}");
        }
    }

    /// Postcodes of every outward shape: `A9`, `A99`, `A9A`, `AA9`, `AA99`, `AA9A`.
    fn valid_postcode() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let first = proptest::sample::select(b"ABCDEFGHIJKLMNOPRSTUWYZ".to_vec());
        let second = proptest::sample::select(b"ABCDEFGHKLMNOPQRSTUVWXY".to_vec());
        let third = proptest::sample::select(b"ABCDEFGHJKPSTUW".to_vec());
        let fourth = proptest::sample::select(b"ABEHMNPRVWXY".to_vec());
        let inward_letter = proptest::sample::select(b"ABDEFGHJLNPQRSTUWXYZ".to_vec());
        let digit = (0u8..10).prop_map(|d| b'0' + d);
        let outward = prop_oneof![
            (first.clone(), digit.clone()).prop_map(|(a, n)| vec![a, n]),
            (first.clone(), digit.clone(), digit.clone()).prop_map(|(a, n, m)| vec![a, n, m]),
            (first.clone(), digit.clone(), third).prop_map(|(a, n, l)| vec![a, n, l]),
            (first.clone(), second.clone(), digit.clone()).prop_map(|(a, l, n)| vec![a, l, n]),
            (first.clone(), second.clone(), digit.clone(), digit.clone())
                .prop_map(|(a, l, n, m)| vec![a, l, n, m]),
            (first, second, digit.clone(), fourth).prop_map(|(a, l, n, k)| vec![a, l, n, k]),
        ];
        (outward, digit, inward_letter.clone(), inward_letter).prop_map(|(o, n, x, y)| {
            format!(
                "{} {}{}{}",
                String::from_utf8(o).unwrap(),
                n as char,
                x as char,
                y as char
            )
        })
    }

    proptest::proptest! {
        /// A valid postcode, in any case and with spaces anywhere, comes
        /// back in the one normal form.
        #[test]
        fn postcodes_normalise_whatever_their_case_and_spacing(
            postcode_text in valid_postcode(),
            lower in proptest::collection::vec(proptest::bool::ANY, 8),
            spaces in proptest::collection::vec(0usize..3, 8),
        ) {
            let messy: String = postcode_text
                .chars()
                .filter(|c| *c != ' ')
                .zip(lower.iter().zip(&spaces))
                .map(|(c, (&low, &n))| {
                    let c = if low { c.to_ascii_lowercase() } else { c };
                    format!("{}{c}", " ".repeat(n))
                })
                .collect();
            proptest::prop_assert_eq!(postcode(&messy), Some(postcode_text.into()));
        }

        /// Normalising is idempotent, and refuses what it cannot normalise,
        /// for any text at all.
        #[test]
        fn normalising_a_postcode_twice_changes_nothing(text in "\\PC{0,12}") {
            if let Some(normal) = postcode(&text) {
                proptest::prop_assert_eq!(postcode(&normal), Some(normal.clone()));
            }
        }
    }
}

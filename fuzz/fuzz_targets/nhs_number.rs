//! Any text as an NHS number: parsed or refused, and a parsed one prints
//! back as ten digits that parse to the same number.
#![no_main]

use dropgate::domain::nhs_number::NhsNumber;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(number) = NhsNumber::parse(text) {
        let digits = number.digits();
        assert_eq!(digits.len(), 10);
        assert_eq!(NhsNumber::parse(&digits).ok(), Some(number));
    }
});

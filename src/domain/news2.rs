//! NEWS2 (Royal College of Physicians, 2017), SpO2 scale 1.

/// Level of consciousness on the ACVPU scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consciousness {
    Alert,
    NewConfusion,
    Voice,
    Pain,
    Unresponsive,
}

impl Consciousness {
    /// Reads the one-letter ACVPU code.
    pub fn from_code(code: &str) -> Option<Consciousness> {
        match code {
            "A" => Some(Consciousness::Alert),
            "C" => Some(Consciousness::NewConfusion),
            "V" => Some(Consciousness::Voice),
            "P" => Some(Consciousness::Pain),
            "U" => Some(Consciousness::Unresponsive),
            _ => None,
        }
    }
}

/// A complete NEWS2 observation set.
#[derive(Debug, Clone, Copy)]
pub struct ObservationSet {
    pub respiration_rate: f64,
    pub spo2: f64,
    pub on_oxygen: bool,
    pub systolic_bp: f64,
    pub pulse: f64,
    pub consciousness: Consciousness,
    pub temperature: f64,
}

/// Clinical response band for a NEWS2 result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Risk {
    Low,
    /// A score of 3 in any single parameter, with a total below 5.
    LowMedium,
    Medium,
    High,
}

/// The total and its per-parameter scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Score {
    pub total: u8,
    pub max_single: u8,
}

impl Score {
    pub fn risk(&self) -> Risk {
        match self.total {
            7.. => Risk::High,
            5..=6 => Risk::Medium,
            _ if self.max_single == 3 => Risk::LowMedium,
            _ => Risk::Low,
        }
    }
}

fn respiration(rate: f64) -> u8 {
    match rate {
        r if r <= 8.0 => 3,
        r if r <= 11.0 => 1,
        r if r <= 20.0 => 0,
        r if r <= 24.0 => 2,
        _ => 3,
    }
}

fn spo2_scale_1(spo2: f64) -> u8 {
    match spo2 {
        s if s <= 91.0 => 3,
        s if s <= 93.0 => 2,
        s if s <= 95.0 => 1,
        _ => 0,
    }
}

fn systolic(bp: f64) -> u8 {
    match bp {
        b if b <= 90.0 => 3,
        b if b <= 100.0 => 2,
        b if b <= 110.0 => 1,
        b if b <= 219.0 => 0,
        _ => 3,
    }
}

fn pulse(rate: f64) -> u8 {
    match rate {
        p if p <= 40.0 => 3,
        p if p <= 50.0 => 1,
        p if p <= 90.0 => 0,
        p if p <= 110.0 => 1,
        p if p <= 130.0 => 2,
        _ => 3,
    }
}

fn temperature(celsius: f64) -> u8 {
    // Bands are published to one decimal place: 35.05 rounds into 35.1-36.0.
    let t = (celsius * 10.0).round() / 10.0;
    match t {
        t if t <= 35.0 => 3,
        t if t <= 36.0 => 1,
        t if t <= 38.0 => 0,
        t if t <= 39.0 => 1,
        _ => 2,
    }
}

/// Scores a complete set.
pub fn score(set: &ObservationSet) -> Score {
    let parts = [
        respiration(set.respiration_rate),
        spo2_scale_1(set.spo2),
        if set.on_oxygen { 2 } else { 0 },
        systolic(set.systolic_bp),
        pulse(set.pulse),
        if set.consciousness == Consciousness::Alert {
            0
        } else {
            3
        },
        temperature(set.temperature),
    ];
    Score {
        total: parts.iter().sum(),
        max_single: parts.into_iter().max().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal() -> ObservationSet {
        ObservationSet {
            respiration_rate: 16.0,
            spo2: 97.0,
            on_oxygen: false,
            systolic_bp: 120.0,
            pulse: 70.0,
            consciousness: Consciousness::Alert,
            temperature: 37.0,
        }
    }

    #[test]
    fn normal_set_scores_zero() {
        let s = score(&normal());
        assert_eq!(s.total, 0);
        assert_eq!(s.risk(), Risk::Low);
    }

    #[test]
    fn band_edges_follow_the_chart() {
        type Band = fn(f64) -> u8;
        let cases: [(Band, &[(f64, u8)]); 5] = [
            (
                respiration,
                &[
                    (8.0, 3),
                    (9.0, 1),
                    (11.0, 1),
                    (12.0, 0),
                    (20.0, 0),
                    (21.0, 2),
                    (24.0, 2),
                    (25.0, 3),
                ],
            ),
            (
                spo2_scale_1,
                &[
                    (91.0, 3),
                    (92.0, 2),
                    (93.0, 2),
                    (94.0, 1),
                    (95.0, 1),
                    (96.0, 0),
                    (100.0, 0),
                ],
            ),
            (
                systolic,
                &[
                    (90.0, 3),
                    (91.0, 2),
                    (100.0, 2),
                    (101.0, 1),
                    (110.0, 1),
                    (111.0, 0),
                    (219.0, 0),
                    (220.0, 3),
                ],
            ),
            (
                pulse,
                &[
                    (40.0, 3),
                    (41.0, 1),
                    (50.0, 1),
                    (51.0, 0),
                    (90.0, 0),
                    (91.0, 1),
                    (110.0, 1),
                    (111.0, 2),
                    (130.0, 2),
                    (131.0, 3),
                ],
            ),
            (
                temperature,
                &[
                    (35.0, 3),
                    (35.1, 1),
                    (36.0, 1),
                    (36.1, 0),
                    (38.0, 0),
                    (38.1, 1),
                    (39.0, 1),
                    (39.1, 2),
                ],
            ),
        ];
        for (f, edges) in cases {
            for &(value, expected) in edges {
                assert_eq!(f(value), expected, "value {value}");
            }
        }
    }

    #[test]
    fn worst_set_scores_twenty() {
        let s = score(&ObservationSet {
            respiration_rate: 30.0,
            spo2: 85.0,
            on_oxygen: true,
            systolic_bp: 80.0,
            pulse: 140.0,
            consciousness: Consciousness::Unresponsive,
            temperature: 34.0,
        });
        assert_eq!(s.total, 20);
        assert_eq!(s.risk(), Risk::High);
    }

    #[test]
    fn a_single_three_is_low_medium() {
        let s = score(&ObservationSet {
            consciousness: Consciousness::Voice,
            ..normal()
        });
        assert_eq!(s.total, 3);
        assert_eq!(s.risk(), Risk::LowMedium);
    }

    #[test]
    fn medium_band() {
        let s = score(&ObservationSet {
            on_oxygen: true,
            pulse: 115.0,
            temperature: 38.5,
            ..normal()
        });
        assert_eq!(s.total, 5);
        assert_eq!(s.risk(), Risk::Medium);
    }
}

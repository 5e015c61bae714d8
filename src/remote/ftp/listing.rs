//! Reading `LIST` lines: Unix `ls -l` and DOS/IIS styles.

use super::*;

pub(super) fn remote_file(file: &ListedFile) -> RemoteFile {
    let mtime = file
        .modified()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().min(u64::from(u32::MAX)) as u32)
        .unwrap_or(0);
    RemoteFile {
        name: file.name().to_string(),
        size: file.size() as u64,
        mtime,
    }
}

pub(super) fn seconds(time: NaiveDateTime) -> u32 {
    time.and_utc().timestamp().clamp(0, i64::from(u32::MAX)) as u32
}

pub(super) enum Listed {
    File(RemoteFile),
    /// A folder, link, `total` line or other entry that is not a file to take.
    Other,
}

/// One `LIST` line, Unix or DOS/IIS style. `None` when it is neither.
pub(super) fn parse_list_line(line: &str) -> Option<Listed> {
    let trimmed = line.trim_end();
    if trimmed.is_empty() || trimmed.starts_with("total ") {
        return Some(Listed::Other);
    }
    if let Ok(file) = ListParser::parse_posix(trimmed) {
        return Some(if file.is_file() {
            Listed::File(remote_file(&file))
        } else {
            Listed::Other
        });
    }
    parse_dos_line(trimmed)
}

/// IIS and other Windows servers: `11-22-26  02:05PM  1,234 name` or
/// `11-22-2026  14:05  <DIR>  name`. suppaftp's parser takes only the first
/// (two-digit year, 12-hour clock), so both are read here.
fn parse_dos_line(line: &str) -> Option<Listed> {
    static DOS: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let dos = DOS.get_or_init(|| {
        Regex::new(
            r"^(\d{2})-(\d{2})-(\d{2}|\d{4})\s+(\d{1,2}):(\d{2})\s*([AaPp][Mm])?\s+(<DIR>|[\d,.]+)\s+(\S.*)$",
        )
        .expect("a valid pattern")
    });
    let caps = dos.captures(line)?;
    let number = |i: usize| caps.get(i).and_then(|m| m.as_str().parse::<u32>().ok());
    let (month, day, year) = (number(1)?, number(2)?, number(3)?);
    let year = match (caps[3].len(), year) {
        (4, y) => y as i32,
        (_, y) if y >= 70 => 1900 + y as i32,
        (_, y) => 2000 + y as i32,
    };
    let (mut hour, minute) = (number(4)?, number(5)?);
    match caps.get(6).map(|m| m.as_str().to_ascii_uppercase()) {
        Some(half) if half == "PM" && hour < 12 => hour += 12,
        Some(half) if half == "AM" && hour == 12 => hour = 0,
        _ => {}
    }
    if &caps[7] == "<DIR>" {
        return Some(Listed::Other);
    }
    let size: u64 = caps[7].replace([',', '.'], "").parse().ok()?;
    let time = NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hour, minute, 0)?;
    Some(Listed::File(RemoteFile {
        name: caps[8].to_string(),
        size,
        mtime: seconds(time),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(line: &str) -> RemoteFile {
        match parse_list_line(line) {
            Some(Listed::File(f)) => f,
            _ => panic!("not read as a file: {line}"),
        }
    }

    fn other(line: &str) -> bool {
        matches!(parse_list_line(line), Some(Listed::Other))
    }

    fn at(text: &str) -> u32 {
        seconds(NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap())
    }

    #[test]
    fn unix_listing_lines() {
        let f = file("-rw-r--r--    1 65534      nogroup          4012 Nov 22  2025 news2 a.csv");
        assert_eq!((f.name.as_str(), f.size), ("news2 a.csv", 4012));
        assert_eq!(f.mtime, at("2025-11-22 00:00"));
        assert!(other(
            "drwxr-xr-x    2 65534      nogroup          4096 Nov 22 07:09 dir1"
        ));
        assert!(other("lrwxrwxrwx    1 0 0 7 Nov 22 07:09 link -> target"));
        assert!(other("total 12"));
    }

    #[test]
    fn dos_listing_lines_in_both_iis_styles() {
        let f = file("11-22-26  02:05PM                 1,234 news2_iis.csv");
        assert_eq!((f.name.as_str(), f.size), ("news2_iis.csv", 1234));
        assert_eq!(f.mtime, at("2026-11-22 14:05"));
        let f = file("11-22-2026  14:05                 5678 name with spaces.csv");
        assert_eq!((f.name.as_str(), f.size), ("name with spaces.csv", 5678));
        assert_eq!(f.mtime, at("2026-11-22 14:05"));
        let f = file("01-02-99  12:00AM  10 old.csv");
        assert_eq!(f.mtime, at("1999-01-02 00:00"));
        assert!(other("04-08-14  03:09PM       <DIR>          folder"));
        assert!(other("04-08-2014  15:09       <DIR>          folder"));
    }

    #[test]
    fn unreadable_lines_are_not_files() {
        assert!(parse_list_line("this is not a listing").is_none());
        assert!(parse_list_line("13-45-2026  99:99  1 x").is_none());
    }
}

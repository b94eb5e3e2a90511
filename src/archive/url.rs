//! `archive.url`: `s3://bucket/prefix`.

/// A parsed `s3://bucket[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArchiveUrl {
    pub bucket: String,
    /// Empty, or ends with `/`: object names follow it directly.
    pub prefix: String,
}

impl ArchiveUrl {
    /// Parses `url`; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<ArchiveUrl, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} does not start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // S3's rules for new buckets: 3 to 63 characters of a-z, 0-9, '.'
        // and '-', beginning and ending with a letter or digit.
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && bucket
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !valid_bucket {
            return Err(format!("{bucket:?} is not a valid S3 bucket name"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|part| part == "." || part == "..")
            || prefix.contains("//")
            || prefix.bytes().any(|b| b.is_ascii_control())
        {
            return Err(format!(
                "the prefix {prefix:?} has an empty, `.` or `..` part"
            ));
        }
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Ok(ArchiveUrl {
            bucket: bucket.to_string(),
            prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_and_prefix() {
        let url = ArchiveUrl::parse("s3://my-bucket/a/b/").unwrap();
        assert_eq!(url.bucket, "my-bucket");
        assert_eq!(url.prefix, "a/b/");
        assert_eq!(ArchiveUrl::parse("s3://abc").unwrap().prefix, "");
        for bad in [
            "abc",
            "s3://",
            "s3://ab",
            "s3://Upper",
            "s3://-abc",
            "s3://abc/x/../y",
            "s3://abc/x//y",
        ] {
            assert!(ArchiveUrl::parse(bad).is_err(), "{bad}");
        }
    }
}

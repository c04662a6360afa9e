//! A client command's arguments: positionals, and flags written `--name VALUE` or
//! `--name=VALUE` (every flag takes a value).

use super::CliError;

/// A command's arguments, split.
#[derive(Debug, Default)]
pub struct Args<'a> {
    /// The arguments that are not flags, in order (`-`, stdin, is one).
    pub positionals: Vec<&'a str>,
    /// The flags given, by name without the dashes; each at most once, so a typo'd
    /// repeat cannot silently override the first.
    flags: Vec<(&'static str, &'a str)>,
}

impl<'a> Args<'a> {
    /// Splits `raw` given the names of the flags the command takes.
    pub fn parse(raw: &[&'a str], known: &[&'static str]) -> Result<Self, CliError> {
        let mut args = Args::default();
        let mut rest = raw.iter();
        while let Some(&arg) = rest.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                if arg.len() > 1 && arg.starts_with('-') {
                    return Err(CliError::Usage(format!("unknown option {arg}")));
                }
                args.positionals.push(arg);
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (flag, None),
            };
            let Some(&name) = known.iter().find(|k| **k == name) else {
                return Err(CliError::Usage(format!("unknown option --{name}")));
            };
            let value = match inline {
                Some(value) => value,
                None => rest
                    .next()
                    .copied()
                    .ok_or_else(|| CliError::Usage(format!("--{name} needs a value")))?,
            };
            if args.flag(name).is_some() {
                return Err(CliError::Usage(format!("--{name} is given twice")));
            }
            args.flags.push((name, value));
        }
        Ok(args)
    }

    /// The value of flag `name`, when given.
    pub fn flag(&self, name: &str) -> Option<&'a str> {
        self.flags.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// The positionals, when there are exactly `N`; `what` names them for the error.
    pub fn exactly<const N: usize>(&self, what: &str) -> Result<[&'a str; N], CliError> {
        self.positionals(N, N, what)?
            .try_into()
            .map_err(|_| CliError::Usage(format!("expected {what}")))
    }

    /// The positionals, when there are `min..=max` of them; `what` names them for the
    /// error.
    pub fn positionals(&self, min: usize, max: usize, what: &str) -> Result<&[&'a str], CliError> {
        let n = self.positionals.len();
        if (min..=max).contains(&n) {
            Ok(&self.positionals)
        } else {
            Err(CliError::Usage(format!(
                "expected {what}, got {n} argument{}",
                if n == 1 { "" } else { "s" }
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_flags_and_positionals() {
        let args = Args::parse(
            &["a.json", "--key", "k1", "--host=10.0.0.5", "-"],
            &["key", "host"],
        )
        .unwrap();
        assert_eq!(args.positionals, ["a.json", "-"]);
        assert_eq!(args.flag("key"), Some("k1"));
        assert_eq!(args.flag("host"), Some("10.0.0.5"));
        assert_eq!(args.flag("gateway"), None);
        assert_eq!(args.positionals(0, 2, "FILE").unwrap(), ["a.json", "-"]);
        assert!(args.positionals(0, 1, "FILE").is_err());
        assert_eq!(args.exactly::<2>("A B").unwrap(), ["a.json", "-"]);
        assert!(args.exactly::<1>("A").is_err());
    }

    #[test]
    fn refuses_unknown_repeated_and_valueless_flags() {
        for raw in [
            &["--nope", "x"][..],
            &["-x"],
            &["--key", "a", "--key=b"],
            &["--key"],
        ] {
            assert!(
                matches!(Args::parse(raw, &["key"]), Err(CliError::Usage(_))),
                "{raw:?}"
            );
        }
    }
}

//! The environment switches of the suites, checked strictly: a switch that
//! would make a suite pass without checking anything is refused.

/// `FSTORE_TEST_REQUIRE_SERVERS`: `1` turns every missing server into a failure.
const REQUIRE: &str = "FSTORE_TEST_REQUIRE_SERVERS";
/// `FSTORE_TEST_ALLOW_SKIP`: `1` lets a suite whose server is missing pass
/// as a (printed) skip; without it the suite fails.
const ALLOW_SKIP: &str = "FSTORE_TEST_ALLOW_SKIP";
/// `FSTORE_TEST_PARITY_CASES`: the number of cases of the property suites.
const CASES: &str = "FSTORE_TEST_PARITY_CASES";

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The value of the environment variable `var` (a server address for a suite).
///
/// When unset, the suite did not run, and that is never silent:
/// - with `FSTORE_TEST_REQUIRE_SERVERS=1` (what `scripts/test.sh` sets) this
///   panics, whatever else is set;
/// - with `FSTORE_TEST_ALLOW_SKIP=1` it prints a skip notice to stderr and
///   returns `None` (the caller returns early: an explicitly allowed skip);
/// - otherwise it panics, naming the variable and both ways out.
///
/// # Panics
/// As above.
pub fn server_url(var_name: &str) -> Option<String> {
    match server_decision(
        var_name,
        var(var_name).as_deref(),
        var(REQUIRE).as_deref(),
        var(ALLOW_SKIP).as_deref(),
    ) {
        Ok(Some(url)) => Some(url),
        Ok(None) => {
            eprintln!(
                "\n!!! SKIPPED (FSTORE_TEST_ALLOW_SKIP=1): {var_name} is not set, so this \
                 conformance suite did NOT run. Use scripts/test.sh. !!!\n"
            );
            None
        }
        Err(msg) => panic!("{msg}"),
    }
}

/// The decision of [`server_url`] from the variables' values: `Ok(Some)` run,
/// `Ok(None)` allowed skip, `Err` fail with this message.
fn server_decision(
    name: &str,
    value: Option<&str>,
    require: Option<&str>,
    allow_skip: Option<&str>,
) -> Result<Option<String>, String> {
    match value {
        Some(v) if !v.is_empty() => Ok(Some(v.to_owned())),
        _ if require == Some("1") => Err(format!(
            "{name} is not set but {REQUIRE}=1: the server this suite needs is missing \
             (run scripts/test.sh)"
        )),
        _ if allow_skip == Some("1") => Ok(None),
        _ => Err(format!(
            "{name} is not set, so this suite cannot run: start its server (scripts/servers/) \
             and export {name}, or set {ALLOW_SKIP}=1 to skip it explicitly"
        )),
    }
}

/// Number of property cases (`FSTORE_TEST_PARITY_CASES`, default `default`).
///
/// # Panics
/// When the variable is set to 0 or to something other than a number: zero
/// cases would pass a property without checking it.
pub(crate) fn parity_cases(default: u32) -> u32 {
    parse_cases(var(CASES).as_deref(), default).unwrap_or_else(|m| panic!("{m}"))
}

fn parse_cases(value: Option<&str>, default: u32) -> Result<u32, String> {
    match value {
        None => Ok(default),
        Some(v) => match v.trim().parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "{CASES}={v:?} is refused: it must be a positive number of cases (0 would pass \
                 the property without checking a single case)"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_or_garbage_cases_are_refused() {
        assert_eq!(parse_cases(None, 64), Ok(64));
        assert_eq!(parse_cases(Some("7"), 64), Ok(7));
        for bad in ["0", "", "-1", "many", "1.5"] {
            let e = parse_cases(Some(bad), 64).unwrap_err();
            assert!(e.contains(CASES) && e.contains("refused"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_missing_server_fails_unless_the_skip_is_explicit() {
        let n = "FSTORE_TEST_X_URL";
        assert_eq!(
            server_decision(n, Some("redis://127.0.0.1:1"), None, None),
            Ok(Some("redis://127.0.0.1:1".into()))
        );
        // nothing set: a failure naming the variable and the way to skip
        let e = server_decision(n, None, None, None).unwrap_err();
        assert!(e.contains(n) && e.contains(ALLOW_SKIP), "{e}");
        // an empty value is not a server
        assert!(server_decision(n, Some(""), None, None).is_err());
        // explicitly allowed: a skip
        assert_eq!(server_decision(n, None, None, Some("1")), Ok(None));
        assert!(server_decision(n, None, None, Some("0")).is_err());
        // required wins over allowed
        let e = server_decision(n, None, Some("1"), Some("1")).unwrap_err();
        assert!(e.contains(REQUIRE), "{e}");
    }
}

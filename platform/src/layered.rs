//! Layered configuration: a TOML text, then `<PREFIX><SECTION>_<KEY>`
//! environment variables on top. The SFU (`SFU_`) and the TURN relay
//! (`TURN_`) load their files through [`layered`], so an operator learns one
//! rule for both.

/// Why [`layered`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayeredError {
    /// A `<PREFIX>*` variable does not name a section and key.
    #[error("{0}")]
    UnknownEnv(String),
    /// The TOML (file plus overrides) is malformed or does not fit the type.
    #[error("{0}")]
    Invalid(String),
}

/// The layered loading both the relay and the SFU use: `text` (TOML), then
/// environment variables `<PREFIX><SECTION>_<KEY>` whose values are TOML
/// values when they parse as such, strings otherwise (so
/// `TURN_SERVER_REALM=x` and `SFU_MEDIA_ANNOUNCE=["1.2.3.4"]` both work).
/// Section names contain no `_`; a variable naming an unknown section is an error.
pub fn layered<T: serde::de::DeserializeOwned>(
    text: &str,
    prefix: &str,
    sections: &[&str],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, LayeredError> {
    let invalid = |e: toml::de::Error| LayeredError::Invalid(e.to_string());
    let mut table: toml::Table = text.parse().map_err(invalid)?;
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        let Some((section, key)) = lower.split_once('_').filter(|(s, _)| sections.contains(s))
        else {
            return Err(LayeredError::UnknownEnv(format!(
                "environment variable {name} does not name a config key ({prefix}<SECTION>_<KEY>)"
            )));
        };
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(t) = entry else {
            return Err(LayeredError::Invalid(format!("[{section}] is not a table")));
        };
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        t.insert(key.to_string(), parsed);
    }
    toml::Value::Table(table).try_into().map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Config {
        #[serde(default)]
        server: Server,
    }

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Server {
        realm: String,
        ports: Vec<u16>,
        threads: u32,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_the_text() {
        let text = "[server]\nrealm = \"file\"\nthreads = 2\n";
        let vars = env(&[
            ("X_SERVER_REALM", "env"),
            ("X_SERVER_PORTS", "[1, 2]"),
            ("OTHER_SERVER_THREADS", "9"),
        ]);
        let c: Config = layered(text, "X_", &["server"], vars).unwrap();
        assert_eq!(
            c.server,
            Server {
                realm: "env".into(),
                ports: vec![1, 2],
                threads: 2
            }
        );
    }

    #[test]
    fn unknown_variables_and_bad_toml_are_told_apart() {
        let unknown = layered::<Config>("", "X_", &["server"], env(&[("X_NOPE_KEY", "1")]));
        assert!(matches!(unknown, Err(LayeredError::UnknownEnv(m)) if m.contains("X_NOPE_KEY")));
        let invalid = layered::<Config>("[server\n", "X_", &["server"], env(&[]));
        assert!(matches!(invalid, Err(LayeredError::Invalid(_))));
        let wrong_type = layered::<Config>(
            "",
            "X_",
            &["server"],
            env(&[("X_SERVER_THREADS", "\"many\"")]),
        );
        assert!(matches!(wrong_type, Err(LayeredError::Invalid(_))));
    }
}

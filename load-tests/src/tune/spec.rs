//! What a tuning sweep runs: `--sweep NAME=V1,V2,...` parsed, and the settings it
//! expands to (one variable at a time from the defaults, or every combination).

use std::collections::BTreeMap;

use serde::Serialize;

/// The worker variables a sweep knows by a short name.
pub const KNOWN: &[(&str, &str)] = &[
    ("prefetch", "AIRLINE_PREFETCH"),
    ("db-pool", "AIRLINE_DB_POOL"),
    ("outbox-batch", "AIRLINE_OUTBOX_BATCH"),
    ("delivery-batch", "AIRLINE_DELIVERY_BATCH"),
];

/// Variables the tuner sets itself for each system it starts.
const RESERVED: &[&str] = &[
    "AIRLINE_PREFIX",
    "AIRLINE_HTTP_ADDR",
    "AMQP_URL",
    "DATABASE_URL",
];

/// The most values one variable may take, and the most settings one sweep may run.
pub const MAX_VALUES: usize = 20;
pub const MAX_SETTINGS: usize = 64;

/// One `--sweep`: a variable and the values it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// The name the tables show: the short name, or the variable itself.
    pub name: String,
    /// The environment variable.
    pub var: String,
    pub values: Vec<String>,
}

/// Parses `NAME=V1,V2,...`. NAME is a short name of [`KNOWN`] (`_` for `-` is
/// fine) or any `AIRLINE_*` variable; the known ones take whole numbers from 1.
///
/// # Errors
/// A message naming what is wrong with `s`.
pub fn parse_sweep(s: &str) -> Result<Sweep, String> {
    let known: Vec<&str> = KNOWN.iter().map(|(n, _)| *n).collect();
    let Some((name, values)) = s.split_once('=') else {
        return Err(format!(
            "`{s}`: expected NAME=V1,V2,... with NAME one of {} or an AIRLINE_* variable",
            known.join(", ")
        ));
    };
    let name = name.trim();
    let short = name.to_ascii_lowercase().replace('_', "-");
    let (name, var, numeric) =
        if let Some((n, v)) = KNOWN.iter().find(|(n, v)| *n == short || *v == name) {
            ((*n).to_owned(), (*v).to_owned(), true)
        } else if name.starts_with("AIRLINE_")
            && name.len() > "AIRLINE_".len()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            (name.to_owned(), name.to_owned(), false)
        } else {
            return Err(format!(
                "unknown variable `{name}`: expected one of {} or an AIRLINE_* variable",
                known.join(", ")
            ));
        };
    if RESERVED.contains(&var.as_str()) {
        return Err(format!(
            "`{var}` is set by tune itself (each setting gets its own namespace)"
        ));
    }
    let values: Vec<String> = values.split(',').map(|v| v.trim().to_owned()).collect();
    if values.iter().any(String::is_empty) {
        return Err(format!("`{s}`: an empty value (expected {name}=V1,V2,...)"));
    }
    if values.len() > MAX_VALUES {
        return Err(format!(
            "`{name}`: {} values, at most {MAX_VALUES}",
            values.len()
        ));
    }
    for (i, v) in values.iter().enumerate() {
        if numeric && !v.parse::<u32>().is_ok_and(|n| n >= 1) {
            return Err(format!("`{name}={v}`: expected a whole number from 1 up"));
        }
        if v.chars().any(char::is_whitespace) {
            return Err(format!("`{name}={v}`: a value may not hold spaces"));
        }
        if values[..i].contains(v) {
            return Err(format!("`{name}`: the value {v} is given twice"));
        }
    }
    Ok(Sweep { name, var, values })
}

/// One configuration of the workers: the variables the tuner sets for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// `defaults`, or the changed values (`prefetch=10 db-pool=5`).
    pub label: String,
    /// The variables set for this setting, on top of the inherited environment.
    pub env: BTreeMap<String, String>,
    /// Every swept variable's value in this setting, by short name, in sweep
    /// order; `default` where the default is not known.
    #[serde(serialize_with = "in_order")]
    pub values: Vec<(String, String)>,
}

/// The values as one JSON object, in sweep order.
fn in_order<S: serde::Serializer>(values: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap as _;
    let mut map = s.serialize_map(Some(values.len()))?;
    for (k, v) in values {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

/// The settings a sweep runs, `defaults` first. One at a time (`grid` false):
/// each value of each variable with the others at their defaults, skipping values
/// equal to the default. A grid: every combination of the values.
/// `base(var)` is a variable's value when the tuner does not set it.
///
/// # Errors
/// A variable swept twice, or more than [`MAX_SETTINGS`] settings.
pub fn plan(
    sweeps: &[Sweep],
    grid: bool,
    base: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Setting>, String> {
    if sweeps.is_empty() {
        return Err("give at least one --sweep NAME=V1,V2,...".into());
    }
    for (i, s) in sweeps.iter().enumerate() {
        if sweeps[..i].iter().any(|o| o.var == s.var) {
            return Err(format!("`{}` is swept twice; give its values once", s.name));
        }
    }
    let bases: Vec<Option<String>> = sweeps.iter().map(|s| base(&s.var)).collect();
    let setting = |chosen: &[Option<&String>]| {
        let mut env = BTreeMap::new();
        let mut changed = Vec::new();
        let mut values = Vec::new();
        for ((s, b), c) in sweeps.iter().zip(&bases).zip(chosen) {
            match c {
                Some(v) if b.as_ref() != Some(*v) => {
                    env.insert(s.var.clone(), (*v).clone());
                    changed.push(format!("{}={v}", s.name));
                    values.push((s.name.clone(), (*v).clone()));
                }
                _ => values.push((
                    s.name.clone(),
                    b.clone().unwrap_or_else(|| "default".into()),
                )),
            }
        }
        let label = if changed.is_empty() {
            "defaults".to_owned()
        } else {
            changed.join(" ")
        };
        Setting { label, env, values }
    };
    let mut settings = vec![setting(&vec![None; sweeps.len()])];
    if grid {
        let mut index = vec![0_usize; sweeps.len()];
        'combinations: loop {
            let chosen: Vec<Option<&String>> = sweeps
                .iter()
                .zip(&index)
                .map(|(s, i)| Some(&s.values[*i]))
                .collect();
            let s = setting(&chosen);
            if !settings.contains(&s) {
                settings.push(s);
            }
            if settings.len() > MAX_SETTINGS {
                break 'combinations;
            }
            // The next combination, the last variable fastest.
            for k in (0..sweeps.len()).rev() {
                index[k] += 1;
                if index[k] < sweeps[k].values.len() {
                    continue 'combinations;
                }
                index[k] = 0;
            }
            break;
        }
    } else {
        for (k, s) in sweeps.iter().enumerate() {
            for v in &s.values {
                let mut chosen = vec![None; sweeps.len()];
                chosen[k] = Some(v);
                let s = setting(&chosen);
                if !settings.contains(&s) {
                    settings.push(s);
                }
            }
        }
    }
    if settings.len() > MAX_SETTINGS {
        return Err(format!(
            "more than {MAX_SETTINGS} settings; sweep fewer values (or drop --grid)"
        ));
    }
    Ok(settings)
}

/// A variable's value when the tuner does not set it: the inherited environment's,
/// else the documented default.
#[must_use]
pub fn inherited(var: &str) -> Option<String> {
    std::env::var(var).ok().or_else(|| {
        airline_runtime::config::VARIABLES
            .iter()
            .find(|v| v.name == var)
            .and_then(|v| {
                let d = v.default.trim();
                (d.len() > 2 && d.starts_with('`') && d.ends_with('`'))
                    .then(|| d[1..d.len() - 1].to_owned())
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(var: &str) -> Option<String> {
        match var {
            "AIRLINE_PREFETCH" => Some("32".into()),
            "AIRLINE_DB_POOL" => Some("20".into()),
            _ => None,
        }
    }

    #[test]
    fn a_sweep_spec_names_a_known_variable_or_an_airline_one() {
        let s = parse_sweep("prefetch=10,50,200").unwrap();
        assert_eq!(s.var, "AIRLINE_PREFETCH");
        assert_eq!(s.values, ["10", "50", "200"]);
        assert_eq!(parse_sweep("db_pool=5").unwrap().name, "db-pool");
        assert_eq!(parse_sweep("AIRLINE_DB_POOL=5").unwrap().name, "db-pool");
        assert_eq!(
            parse_sweep("delivery-batch=1,16").unwrap().var,
            "AIRLINE_DELIVERY_BATCH"
        );
        let raw = parse_sweep("AIRLINE_INBOX_RETENTION=1h,7d").unwrap();
        assert_eq!(
            (raw.name.as_str(), raw.var.as_str()),
            ("AIRLINE_INBOX_RETENTION", "AIRLINE_INBOX_RETENTION")
        );
    }

    #[test]
    fn bad_sweep_specs_say_what_is_wrong() {
        let err = |s: &str| parse_sweep(s).unwrap_err();
        assert!(
            err("prefetch").contains("expected NAME=V1,V2"),
            "{}",
            err("prefetch")
        );
        assert!(err("speed=1,2").contains("unknown variable `speed`"));
        assert!(err("prefetch=10,,20").contains("empty value"));
        assert!(err("prefetch=0").contains("whole number from 1"));
        assert!(err("db-pool=ten").contains("`db-pool=ten`"));
        assert!(err("prefetch=10,10").contains("given twice"));
        assert!(err("AIRLINE_PREFIX=a.,b.").contains("set by tune itself"));
        assert!(err("airline_foo=1").contains("unknown variable"));
        let many: Vec<String> = (1..=21).map(|n| n.to_string()).collect();
        assert!(err(&format!("prefetch={}", many.join(","))).contains("at most 20"));
    }

    #[test]
    fn one_at_a_time_starts_from_the_defaults_and_skips_them() {
        let sweeps = [
            parse_sweep("prefetch=10,32,200").unwrap(),
            parse_sweep("db-pool=5,40").unwrap(),
        ];
        let plan = plan(&sweeps, false, defaults).unwrap();
        let labels: Vec<&str> = plan.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "defaults",
                "prefetch=10",
                "prefetch=200",
                "db-pool=5",
                "db-pool=40"
            ]
        );
        assert!(plan[0].env.is_empty());
        assert_eq!(
            plan[0].values,
            [
                ("prefetch".into(), "32".into()),
                ("db-pool".into(), "20".into())
            ]
        );
        assert_eq!(plan[3].env.len(), 1);
        assert_eq!(plan[3].env["AIRLINE_DB_POOL"], "5");
        assert_eq!(plan[3].values[0], ("prefetch".into(), "32".into()));
        let json = serde_json::to_string(&plan[3]).unwrap();
        assert!(
            json.contains(r#""values":{"prefetch":"32","db-pool":"5"}"#),
            "{json}"
        );
    }

    #[test]
    fn an_unknown_default_shows_as_default() {
        let sweeps = [parse_sweep("delivery-batch=1,8").unwrap()];
        let plan = plan(&sweeps, false, defaults).unwrap();
        assert_eq!(plan.len(), 3);
        assert_eq!(plan[0].values[0].1, "default");
        assert_eq!(plan[2].env["AIRLINE_DELIVERY_BATCH"], "8");
    }

    #[test]
    fn a_grid_runs_every_combination_once() {
        let sweeps = [
            parse_sweep("prefetch=10,32").unwrap(),
            parse_sweep("db-pool=5,20,40").unwrap(),
        ];
        let plan = plan(&sweeps, true, defaults).unwrap();
        let labels: Vec<&str> = plan.iter().map(|s| s.label.as_str()).collect();
        // prefetch=32 db-pool=20 is the defaults, run once, first.
        assert_eq!(
            labels,
            [
                "defaults",
                "prefetch=10 db-pool=5",
                "prefetch=10",
                "prefetch=10 db-pool=40",
                "db-pool=5",
                "db-pool=40",
            ]
        );
        assert_eq!(plan[2].env["AIRLINE_PREFETCH"], "10");
        assert_eq!(plan[2].values[1], ("db-pool".into(), "20".into()));
    }

    #[test]
    fn a_plan_refuses_a_variable_twice_and_too_many_settings() {
        let twice = [
            parse_sweep("prefetch=10").unwrap(),
            parse_sweep("AIRLINE_PREFETCH=20").unwrap(),
        ];
        assert!(
            plan(&twice, false, defaults)
                .unwrap_err()
                .contains("swept twice")
        );
        assert!(plan(&[], false, defaults).is_err());
        let big: Vec<String> = (1..=9).map(|n| (n * 100).to_string()).collect();
        let sweeps = [
            parse_sweep(&format!("prefetch={}", big.join(","))).unwrap(),
            parse_sweep(&format!("db-pool={}", big.join(","))).unwrap(),
        ];
        assert!(plan(&sweeps, false, defaults).is_ok());
        assert!(
            plan(&sweeps, true, defaults)
                .unwrap_err()
                .contains("more than 64")
        );
    }
}

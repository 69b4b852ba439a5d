//! Routes: per stage, ordered rules that pick a target for each request.
//!
//! A target is `local` (the in-process implementation, when this process
//! hosts the stage) or a named remote pool (`default` is `[remote.<stage>]`
//! itself; others are `[remote.<stage>.pools.<name>]`). A rule matches on the
//! tenant, the dye, the stress tag and a list of user ids (all that it names
//! must hold) and sends the request to one target or splits by weight, sticky
//! by a stable hash of the user (so raising a weight only moves users onto
//! the target that grew) or per request. The first matching rule wins; with
//! none, the stage's default target (local if hosted, else `default`) serves,
//! which is how a process without routes has always behaved.
//!
//! A target with no healthy endpoint falls back to the rule's `fallback`
//! (default: the default target), counted in `feeds_route_fallbacks_total`.
//! The table is swapped whole on reload; a call keeps the table it started with.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::{Balancer, ConfigError, Cx, Stage};

/// Metadata key of the dye: a colour that steers a request, and all it
/// calls, to coloured pools.
pub const DYE: &str = "x-tandem-dye";
/// Metadata key of the stress tag: load-test traffic.
pub const STRESS: &str = "x-tandem-stress";
/// Metadata key that marks a shadow copy of a request.
pub const SHADOW: &str = "x-tandem-shadow";
/// Response metadata listing the target that served each hop (`--explain`).
pub const PATH: &str = "x-tandem-path";
/// The name of the in-process target.
pub const LOCAL: &str = "local";
/// The name of the pool `[remote.<stage>]` itself describes.
pub const DEFAULT_POOL: &str = "default";

/// One `[[routes.<stage>]]` rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteRule {
    /// Matches requests of this tenant (`x-tenant`).
    pub tenant: Option<String>,
    /// Matches requests dyed this colour (`x-tandem-dye`).
    pub dye: Option<String>,
    /// Matches stress-tagged (`true`) or live (`false`) traffic.
    pub stress: Option<bool>,
    /// Matches these user ids only (the allow-list that goes first in a rollout).
    pub users: Vec<String>,
    /// Where matching requests go: `local` or a pool name.
    pub target: Option<String>,
    /// Or a weighted split over targets; weights are relative (percentages
    /// read naturally). Users are dealt to targets in list order.
    pub split: Vec<Weighted>,
    /// A split keeps each user on one target (by a stable hash of the user
    /// id); false deals every request afresh.
    pub sticky: bool,
    /// Where a request goes when its target has no healthy endpoint;
    /// default: the stage's default target.
    pub fallback: Option<String>,
    /// Also send a sample of the matching requests to another target, off
    /// the request path, and compare its answers with the served ones.
    pub shadow: Option<ShadowRule>,
}

/// A rule's shadow: which target gets copies of its requests, how many.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShadowRule {
    /// `local` or a pool name; never the target that served the request.
    pub target: String,
    /// Fraction of the matching requests copied (0..=1).
    pub rate: f64,
    /// Fraction of the copied requests whose primary is also called a
    /// second time, to measure how much the primary disagrees with itself
    /// (the noise the comparison filters out; 0..=1).
    pub noise: f64,
}

impl Default for ShadowRule {
    fn default() -> Self {
        Self {
            target: String::new(),
            rate: 1.0,
            noise: 0.1,
        }
    }
}

impl Default for RouteRule {
    fn default() -> Self {
        Self {
            tenant: None,
            dye: None,
            stress: None,
            users: Vec::new(),
            target: None,
            split: Vec::new(),
            sticky: true,
            fallback: None,
            shadow: None,
        }
    }
}

/// One target of a weighted split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weighted {
    /// `local` or a pool name.
    pub target: String,
    /// Relative weight, 0 or more.
    pub weight: f64,
}

impl RouteRule {
    /// Checks the rule; `prefix` is its dotted path (`routes.recall[0]`) and
    /// `targets` the names this stage can reach here.
    pub fn validate(&self, prefix: &str, targets: &[&str]) -> Result<(), ConfigError> {
        let known = |key: String, name: &str| {
            if targets.contains(&name) {
                Ok(())
            } else {
                Err(ConfigError::new(
                    key,
                    format!(
                        "{name:?} is not a target of this stage here (known: {})",
                        targets.join(", ")
                    ),
                ))
            }
        };
        match (&self.target, self.split.is_empty()) {
            (Some(_), false) => {
                return Err(ConfigError::new(
                    format!("{prefix}.split"),
                    "a rule has either `target` or `split`, not both",
                ));
            }
            (None, true) => {
                return Err(ConfigError::new(
                    format!("{prefix}.target"),
                    "a rule needs a `target` or a `split`",
                ));
            }
            (Some(t), true) => known(format!("{prefix}.target"), t)?,
            (None, false) => {
                let mut total = 0.0;
                for (i, w) in self.split.iter().enumerate() {
                    known(format!("{prefix}.split[{i}].target"), &w.target)?;
                    if !(w.weight.is_finite() && w.weight >= 0.0) {
                        return Err(ConfigError::new(
                            format!("{prefix}.split[{i}].weight"),
                            format!("{} is not a weight (0 or more)", w.weight),
                        ));
                    }
                    total += w.weight;
                }
                if total <= 0.0 {
                    return Err(ConfigError::new(
                        format!("{prefix}.split"),
                        "the weights add up to 0",
                    ));
                }
            }
        }
        if let Some(f) = &self.fallback {
            known(format!("{prefix}.fallback"), f)?;
        }
        if let Some(s) = &self.shadow {
            known(format!("{prefix}.shadow.target"), &s.target)?;
            for (key, v) in [("rate", s.rate), ("noise", s.noise)] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(ConfigError::new(
                        format!("{prefix}.shadow.{key}"),
                        format!("{v} is not a fraction (0..=1)"),
                    ));
                }
            }
        }
        for (key, value) in [("tenant", &self.tenant), ("dye", &self.dye)] {
            if value.as_deref() == Some("") {
                return Err(ConfigError::new(
                    format!("{prefix}.{key}"),
                    "must not be empty (leave it out to match any)",
                ));
            }
        }
        Ok(())
    }
}

/// One target a table can send a call to.
pub struct Target<T: ?Sized> {
    /// `local` or the pool's name.
    pub name: String,
    /// The stub that calls it.
    pub stub: Arc<T>,
    /// The pool's balancer (`None` for `local`, which is always healthy).
    pub balancer: Option<Arc<Balancer>>,
}

impl<T: ?Sized> Target<T> {
    /// Whether it can be called: `local`, or a pool with an endpoint that
    /// answers its health probe.
    pub(crate) fn healthy(&self) -> bool {
        self.balancer.as_ref().is_none_or(|b| b.reachable())
    }
}

/// How a rule picks.
enum Pick {
    /// Always this target.
    One(usize),
    /// By weight: (upper bound of the bucket range, target), in order.
    Split {
        ranges: Vec<(u64, usize)>,
        sticky: bool,
    },
}

/// Buckets a weighted split deals users into.
const BUCKETS: u64 = 1_000_000;

struct Compiled {
    tenant: Option<String>,
    dye: Option<String>,
    stress: Option<bool>,
    users: HashSet<String>,
    pick: Pick,
    fallback: usize,
    /// The shadow target, the copied fraction and the noise fraction, in
    /// millionths.
    shadow: Option<(usize, u64, u64)>,
}

/// A call's shadow copy, when its rule has one and the sample says so.
pub struct ShadowPick<'t, T: ?Sized> {
    /// Where the copy goes.
    pub target: &'t Target<T>,
    /// Whether the primary is also called again, to measure its noise.
    pub noise: bool,
}

impl Compiled {
    fn matches(&self, cx: &Cx, user: &str) -> bool {
        self.tenant
            .as_deref()
            .is_none_or(|t| cx.tenant() == Some(t))
            && self
                .dye
                .as_deref()
                .is_none_or(|d| cx.header(DYE) == Some(d))
            && self.stress.is_none_or(|s| cx.is_stress() == s)
            && (self.users.is_empty() || self.users.contains(user))
    }
}

/// One stage's route table: its targets, rules and default.
pub struct Table<T: ?Sized> {
    /// The stage routed.
    stage: Stage,
    /// Every target, `local` first when present.
    targets: Vec<Target<T>>,
    /// The rules, in order.
    rules: Vec<Compiled>,
    /// The target when no rule matches.
    default: usize,
    /// Where copies for the rules' shadows go.
    shadows: Arc<crate::shadow::Shadows>,
}

impl<T: ?Sized> Table<T> {
    /// A table over `targets` (validated names) with `rules` (validated by
    /// [`RouteRule::validate`]); the default target is `local` if present,
    /// else the `default` pool.
    pub fn new(stage: Stage, targets: Vec<Target<T>>, rules: &[RouteRule]) -> Self {
        Self::with_shadows(stage, targets, rules, Arc::default())
    }

    /// As [`Table::new`], with the process's shadow runtime.
    pub fn with_shadows(
        stage: Stage,
        targets: Vec<Target<T>>,
        rules: &[RouteRule],
        shadows: Arc<crate::shadow::Shadows>,
    ) -> Self {
        let index = |name: &str| targets.iter().position(|t| t.name == name);
        let default = index(LOCAL).or_else(|| index(DEFAULT_POOL)).unwrap_or(0);
        let rules = rules
            .iter()
            .map(|r| {
                let pick = match &r.target {
                    Some(t) => Pick::One(index(t).unwrap_or(default)),
                    None => {
                        let total: f64 = r.split.iter().map(|w| w.weight).sum();
                        let mut upper = 0.0;
                        let ranges = r
                            .split
                            .iter()
                            .map(|w| {
                                upper += w.weight / total;
                                let bound = (upper * BUCKETS as f64).round() as u64;
                                (bound, index(&w.target).unwrap_or(default))
                            })
                            .collect();
                        Pick::Split {
                            ranges,
                            sticky: r.sticky,
                        }
                    }
                };
                Compiled {
                    tenant: r.tenant.clone(),
                    dye: r.dye.clone(),
                    stress: r.stress,
                    users: r.users.iter().cloned().collect(),
                    pick,
                    fallback: r.fallback.as_deref().and_then(index).unwrap_or(default),
                    shadow: r.shadow.as_ref().and_then(|s| {
                        let millionths = |f: f64| (f * BUCKETS as f64).round() as u64;
                        Some((index(&s.target)?, millionths(s.rate), millionths(s.noise)))
                    }),
                }
            })
            .collect();
        Self {
            stage,
            targets,
            rules,
            default,
            shadows,
        }
    }

    /// The shadow runtime copies of this table's calls go to.
    pub fn shadows(&self) -> &Arc<crate::shadow::Shadows> {
        &self.shadows
    }

    /// The target for a call in `cx` for `user`, after health fallback.
    pub fn pick(&self, cx: &Cx, user: &str) -> &Target<T> {
        self.pick_with_shadow(cx, user).0
    }

    /// The target for a call in `cx` for `user`, after health fallback, and
    /// the shadow copy's, if the matching rule has a shadow, the sample
    /// takes this call, the shadow is not the target that serves it, and
    /// the call is not itself a shadow copy.
    pub fn pick_with_shadow(&self, cx: &Cx, user: &str) -> (&Target<T>, Option<ShadowPick<'_, T>>) {
        let rule = self.rules.iter().find(|r| r.matches(cx, user));
        let target = self.target_of(rule, user);
        let shadow = rule
            .and_then(|r| r.shadow)
            .filter(|_| !cx.is_shadow())
            .and_then(|(i, rate, noise)| {
                let draw = crate::observe::random_u64();
                let shadowed = draw % BUCKETS < rate;
                let other = &self.targets[i];
                (shadowed && !std::ptr::eq(other, target)).then_some(ShadowPick {
                    target: other,
                    noise: (draw >> 32) % BUCKETS < noise,
                })
            });
        (target, shadow)
    }

    fn target_of(&self, rule: Option<&Compiled>, user: &str) -> &Target<T> {
        let (chosen, fallback) = match rule {
            None => (self.default, self.default),
            Some(rule) => {
                let chosen = match &rule.pick {
                    Pick::One(i) => *i,
                    Pick::Split { ranges, sticky } => {
                        let bucket = match sticky {
                            true => stable_hash(user) % BUCKETS,
                            false => crate::observe::random_u64() % BUCKETS,
                        };
                        ranges
                            .iter()
                            .find(|(upper, _)| bucket < *upper)
                            .or(ranges.last())
                            .map_or(self.default, |(_, i)| *i)
                    }
                };
                (chosen, rule.fallback)
            }
        };
        let target = &self.targets[chosen];
        if chosen == fallback || target.healthy() {
            return target;
        }
        let to = &self.targets[fallback];
        crate::observe::count_fallback(self.stage, &target.name, &to.name);
        to
    }

    /// The targets' names and the rules, one line each, for logs.
    pub fn describe(&self, rules: &[RouteRule]) -> Vec<String> {
        let mut out = vec![format!(
            "{}: targets {}; default {}",
            self.stage.name(),
            self.targets
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            self.targets[self.default].name
        )];
        for (i, r) in rules.iter().enumerate() {
            let mut when = Vec::new();
            if let Some(t) = &r.tenant {
                when.push(format!("tenant={t}"));
            }
            if let Some(d) = &r.dye {
                when.push(format!("dye={d}"));
            }
            if let Some(s) = r.stress {
                when.push(format!("stress={s}"));
            }
            if !r.users.is_empty() {
                when.push(format!("{} users", r.users.len()));
            }
            let to = match &r.target {
                Some(t) => t.clone(),
                None => {
                    r.split
                        .iter()
                        .map(|w| format!("{}:{}", w.target, w.weight))
                        .collect::<Vec<_>>()
                        .join(" ")
                        + if r.sticky {
                            " (sticky)"
                        } else {
                            " (per request)"
                        }
                }
            };
            out.push(format!(
                "{}[{i}]: {} -> {to}{}{}",
                self.stage.name(),
                if when.is_empty() {
                    "any".to_owned()
                } else {
                    when.join(" ")
                },
                r.fallback
                    .as_ref()
                    .map(|f| format!(", fallback {f}"))
                    .unwrap_or_default(),
                r.shadow
                    .as_ref()
                    .map(|s| format!(
                        ", shadow {} ({:.0}% of calls, noise {:.0}%)",
                        s.target,
                        s.rate * 100.0,
                        s.noise * 100.0
                    ))
                    .unwrap_or_default()
            ));
        }
        out
    }
}

/// A stage's current table; swapped whole on reload.
pub struct Router<T: ?Sized> {
    /// The table calls start with.
    current: RwLock<Arc<Table<T>>>,
}

impl<T: ?Sized> Router<T> {
    /// A router starting with `table`.
    pub fn new(table: Table<T>) -> Self {
        Self {
            current: RwLock::new(Arc::new(table)),
        }
    }

    /// The table a call starts with (it keeps it until it ends).
    pub fn current(&self) -> Arc<Table<T>> {
        match self.current.read() {
            Ok(t) => Arc::clone(&t),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the table; calls already started keep the old one.
    pub fn replace(&self, table: Table<T>) {
        let table = Arc::new(table);
        match self.current.write() {
            Ok(mut t) => *t = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
    }
}

/// A stable 64-bit hash of a user id (FNV-1a, then a splitmix finaliser):
/// the same in every process and version, so a user's bucket never moves.
pub fn stable_hash(user: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A request message that names the user it is for (generated for every
/// request type: its `user_id` field, or empty).
pub trait RouteKey {
    /// The user id sticky splits hash.
    fn route_key(&self) -> &str;
}

/// An address range (`127.0.0.0/8`, `10.1.2.3`, `::1/128`): the peers the
/// entry stage trusts with `x-tandem-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    addr: std::net::IpAddr,
    /// Prefix length in bits.
    len: u8,
}

impl Cidr {
    /// Parses `addr` or `addr/len`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: std::net::IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or range (a.b.c.d/len)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{text:?}: prefix length must be 0..={max}"))?,
        };
        Ok(Self { addr, len })
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Interned target names, so metric labels can be `&'static str` without
/// leaking a string per reload.
pub(crate) fn intern(name: &str) -> &'static str {
    static NAMES: LazyLock<Mutex<BTreeMap<String, &'static str>>> = LazyLock::new(Mutex::default);
    let Ok(mut names) = NAMES.lock() else {
        return "other";
    };
    if let Some(s) = names.get(name) {
        return s;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(name.to_owned(), leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rules: &[RouteRule]) -> Table<str> {
        let target = |name: &str| Target {
            name: name.to_owned(),
            stub: Arc::from(name),
            balancer: None,
        };
        Table::new(
            Stage::Recall,
            vec![target(LOCAL), target("default"), target("canary")],
            rules,
        )
    }

    fn split(canary: f64, sticky: bool) -> RouteRule {
        RouteRule {
            split: vec![
                Weighted {
                    target: "canary".into(),
                    weight: canary,
                },
                Weighted {
                    target: "default".into(),
                    weight: 100.0 - canary,
                },
            ],
            sticky,
            ..RouteRule::default()
        }
    }

    #[test]
    fn first_matching_rule_wins_and_default_is_local() {
        let t = table(&[
            RouteRule {
                dye: Some("canary".into()),
                target: Some("canary".into()),
                ..RouteRule::default()
            },
            RouteRule {
                tenant: Some("lite".into()),
                target: Some("default".into()),
                ..RouteRule::default()
            },
        ]);
        let name = |cx: Cx| t.pick(&cx, "7").name.clone();
        assert_eq!(name(Cx::new()), "local");
        assert_eq!(name(Cx::new().with_tenant("lite")), "default");
        assert_eq!(
            name(Cx::new().with_tenant("lite").with_header(DYE, "canary")),
            "canary"
        );
        assert_eq!(name(Cx::new().with_header(DYE, "blue")), "local");
    }

    #[test]
    fn sticky_split_only_moves_users_onto_the_growing_target() {
        let users: Vec<String> = (0..20_000).map(|u| u.to_string()).collect();
        let mut previous: Option<Vec<String>> = None;
        for weight in [0.0, 1.0, 2.0, 10.0, 20.0, 40.0, 80.0, 100.0] {
            let t = table(&[split(weight, true)]);
            let got: Vec<String> = users
                .iter()
                .map(|u| t.pick(&Cx::new(), u).name.clone())
                .collect();
            let share = got.iter().filter(|n| *n == "canary").count() as f64 / users.len() as f64;
            assert!((share * 100.0 - weight).abs() < 1.0, "{weight}: {share}");
            if let Some(prev) = &previous {
                for (a, b) in prev.iter().zip(&got) {
                    assert!(!(a == "canary" && b == "default"), "a user moved back");
                }
            }
            previous = Some(got);
        }
    }

    #[test]
    fn ranges_contain_what_they_should() {
        let lo = Cidr::parse("127.0.0.0/8").expect("valid");
        assert!(lo.contains("127.0.0.2".parse().expect("ip")));
        assert!(lo.contains("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!lo.contains("10.0.0.1".parse().expect("ip")));
        let one = Cidr::parse("10.1.2.3").expect("valid");
        assert!(one.contains("10.1.2.3".parse().expect("ip")));
        assert!(!one.contains("10.1.2.4".parse().expect("ip")));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("valid")
                .contains("8.8.8.8".parse().expect("ip"))
        );
        assert!(
            Cidr::parse("::1/128")
                .expect("valid")
                .contains("::1".parse().expect("ip"))
        );
        for bad in ["", "localhost", "10.0.0.0/33", "10.0.0.0/x"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rules_are_checked_naming_the_key() {
        let targets = [LOCAL, "default"];
        let key = |r: RouteRule| {
            r.validate("routes.recall[0]", &targets)
                .expect_err("invalid")
                .key
        };
        assert_eq!(key(RouteRule::default()), "routes.recall[0].target");
        assert_eq!(
            key(RouteRule {
                target: Some("canary".into()),
                ..RouteRule::default()
            }),
            "routes.recall[0].target"
        );
        assert_eq!(key(split(10.0, true)), "routes.recall[0].split[0].target");
        let mut bad = split(10.0, true);
        bad.split[0].target = "local".into();
        bad.split[1].weight = -1.0;
        assert_eq!(key(bad), "routes.recall[0].split[1].weight");
        assert_eq!(
            key(RouteRule {
                target: Some("local".into()),
                fallback: Some("nowhere".into()),
                ..RouteRule::default()
            }),
            "routes.recall[0].fallback"
        );
    }
}

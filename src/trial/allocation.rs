//! Allocation: which eligible device goes to which arm. Pure and deterministic for a seed (the
//! seed is the protocol's `allocation_seed`, recorded in the journal with every `Allocated`).
//!
//! Arms are served in this order:
//! 1. `udids`: every arm's listed devices (an error if one is not eligible, or listed twice);
//! 2. the rest of the eligible devices form the *pool*, sorted by UDID and shuffled with
//!    [`SplitMix64`] seeded with the seed (so the input order does not matter);
//! 3. arms with `count` and no `stratify`, in protocol order, take that many devices from the
//!    front of the pool (on top of their `udids`; an error if too few are left);
//! 4. arms with `stratify` share the pool: it is grouped into strata (passcode: `passcode`,
//!    `no_passcode`, `unknown`; model: the ProductType or `unknown`), each stratum keeps its
//!    shuffled order, and the devices are dealt round-robin to the stratified arms, the rotation
//!    running on from one stratum to the next. Each arm thus gets an equal share of every stratum
//!    (±1) and of the total (±1). A stratified arm with `count` stops at that many (an error if it
//!    cannot get them); all stratified arms must stratify by the same thing;
//! 5. arms with no allocation at all share whatever is left, round-robin (1:1:… randomisation).
//!
//! Devices left over (no arm takes the rest) are not allocated.

use super::protocol::{ArmSpec, Stratum};
use crate::rng::SplitMix64;
use std::collections::{BTreeMap, HashMap, HashSet};

/// An eligible device, with what stratification may look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub udid: String,
    pub passcode: Option<bool>,
    /// ProductType (`iPhone12,1`).
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error(
        "arm {arm:?} lists {udid}, which is not among the {eligible} eligible devices (it was excluded, or is not attached)"
    )]
    NotEligible {
        arm: String,
        udid: String,
        eligible: usize,
    },
    #[error("{udid} is listed by two arms, {first:?} and {second:?}")]
    ListedTwice {
        udid: String,
        first: String,
        second: String,
    },
    #[error(
        "arm {arm:?} needs {wanted} devices drawn at random, but only {available} eligible devices are left for it"
    )]
    NotEnough {
        arm: String,
        wanted: usize,
        available: usize,
    },
    #[error(
        "stratified arms must stratify by the same thing: {first_arm:?} by {first:?}, {second_arm:?} by {second:?}"
    )]
    MixedStrata {
        first_arm: String,
        first: Stratum,
        second_arm: String,
        second: Stratum,
    },
    #[error("{udid} appears twice among the eligible devices")]
    DuplicateCandidate { udid: String },
}

/// All stratified arms stratify by the same thing (step 4 deals one set of strata). Pure in the
/// protocol: checked when it is read, before any device is looked at.
pub fn check_strata(arms: &[ArmSpec]) -> Result<(), AllocationError> {
    let mut by = arms
        .iter()
        .filter_map(|a| Some((a, a.allocation.stratify?)));
    let Some((first_arm, first)) = by.next() else {
        return Ok(());
    };
    match by.find(|(_, s)| *s != first) {
        Some((a, second)) => Err(AllocationError::MixedStrata {
            first_arm: first_arm.name.clone(),
            first,
            second_arm: a.name.clone(),
            second,
        }),
        None => Ok(()),
    }
}

/// The stratum of a candidate, as recorded: `passcode` / `no_passcode` / `unknown`, or the model.
pub fn stratum_of(c: &Candidate, by: Stratum) -> String {
    match by {
        Stratum::Passcode => match c.passcode {
            Some(true) => "passcode".into(),
            Some(false) => "no_passcode".into(),
            None => "unknown".into(),
        },
        Stratum::Model => c.model.clone().unwrap_or_else(|| "unknown".into()),
    }
}

/// Fisher–Yates with SplitMix64.
fn shuffle<T>(v: &mut [T], rng: &mut SplitMix64) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// Allocate eligible devices to arms; `(udid, arm name)` pairs, grouped by arm in protocol order.
pub fn allocate(
    arms: &[ArmSpec],
    eligible: &[Candidate],
    seed: u64,
) -> Result<Vec<(String, String)>, AllocationError> {
    let mut by_udid: HashMap<&str, &Candidate> = HashMap::new();
    for c in eligible {
        if by_udid.insert(c.udid.as_str(), c).is_some() {
            return Err(AllocationError::DuplicateCandidate {
                udid: c.udid.clone(),
            });
        }
    }
    let mut got: Vec<Vec<String>> = vec![Vec::new(); arms.len()];

    // 1. Listed devices.
    let mut listed: HashMap<&str, &str> = HashMap::new();
    for (i, a) in arms.iter().enumerate() {
        for u in &a.allocation.udids {
            if !by_udid.contains_key(u.as_str()) {
                return Err(AllocationError::NotEligible {
                    arm: a.name.clone(),
                    udid: u.clone(),
                    eligible: eligible.len(),
                });
            }
            if let Some(first) = listed.insert(u.as_str(), a.name.as_str()) {
                return Err(AllocationError::ListedTwice {
                    udid: u.clone(),
                    first: first.to_string(),
                    second: a.name.clone(),
                });
            }
            got[i].push(u.clone());
        }
    }

    // 2. The shuffled pool.
    let mut pool: Vec<&Candidate> = eligible
        .iter()
        .filter(|c| !listed.contains_key(c.udid.as_str()))
        .collect();
    pool.sort_by(|a, b| a.udid.cmp(&b.udid));
    shuffle(&mut pool, &mut SplitMix64::new(seed));
    let mut pool: std::collections::VecDeque<&Candidate> = pool.into();

    // 3. Counted arms.
    for (i, a) in arms.iter().enumerate() {
        if let (Some(n), None) = (a.allocation.count, a.allocation.stratify) {
            if pool.len() < n {
                return Err(AllocationError::NotEnough {
                    arm: a.name.clone(),
                    wanted: n,
                    available: pool.len(),
                });
            }
            got[i].extend(pool.drain(..n).map(|c| c.udid.clone()));
        }
    }

    // 4. Stratified arms.
    let stratified: Vec<usize> = (0..arms.len())
        .filter(|&i| arms[i].allocation.stratify.is_some())
        .collect();
    check_strata(arms)?;
    if let Some(&first) = stratified.first() {
        let by = arms[first].allocation.stratify.expect("filtered");
        let mut strata: BTreeMap<String, Vec<&Candidate>> = BTreeMap::new();
        for c in &pool {
            strata.entry(stratum_of(c, by)).or_default().push(c);
        }
        let mut taken: HashSet<&str> = HashSet::new();
        let mut drawn = vec![0usize; arms.len()];
        let full =
            |i: usize, drawn: &[usize]| arms[i].allocation.count.is_some_and(|n| drawn[i] >= n);
        let mut next = 0usize;
        'deal: for members in strata.values() {
            for c in members {
                // The next arm in the rotation that still takes devices.
                let Some(k) = (0..stratified.len())
                    .map(|o| (next + o) % stratified.len())
                    .find(|&k| !full(stratified[k], &drawn))
                else {
                    break 'deal;
                };
                let i = stratified[k];
                got[i].push(c.udid.clone());
                drawn[i] += 1;
                taken.insert(c.udid.as_str());
                next = (k + 1) % stratified.len();
            }
        }
        for &i in &stratified {
            if let Some(n) = arms[i].allocation.count
                && drawn[i] < n
            {
                return Err(AllocationError::NotEnough {
                    arm: arms[i].name.clone(),
                    wanted: n,
                    available: drawn[i],
                });
            }
        }
        pool.retain(|c| !taken.contains(c.udid.as_str()));
    }

    // 5. Arms with no allocation share the rest.
    let rest: Vec<usize> = (0..arms.len())
        .filter(|&i| {
            let a = &arms[i].allocation;
            a.udids.is_empty() && a.count.is_none() && a.stratify.is_none()
        })
        .collect();
    if !rest.is_empty() {
        for (n, c) in pool.drain(..).enumerate() {
            got[rest[n % rest.len()]].push(c.udid.clone());
        }
    }

    Ok(arms
        .iter()
        .zip(got)
        .flat_map(|(a, us)| us.into_iter().map(move |u| (u, a.name.clone())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdm::command::InstallAction;
    use crate::trial::protocol::AllocationSpec;

    fn arm(name: &str, allocation: AllocationSpec) -> ArmSpec {
        ArmSpec {
            name: name.into(),
            install_action: Some(InstallAction::Default),
            ddm_enforcement: None,
            follow_up_step: None,
            allocation,
            accept_known_bad: false,
        }
    }

    fn rest(name: &str) -> ArmSpec {
        arm(name, AllocationSpec::default())
    }

    fn cands(n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                udid: format!("UDID-{i:02}"),
                passcode: Some(i % 3 == 0),
                model: Some(
                    if i % 2 == 0 {
                        "iPhone12,1"
                    } else {
                        "iPhone14,5"
                    }
                    .into(),
                ),
            })
            .collect()
    }

    fn arm_of<'a>(a: &'a [(String, String)], udid: &str) -> &'a str {
        &a.iter().find(|(u, _)| u == udid).unwrap().1
    }

    fn members(a: &[(String, String)], arm: &str) -> Vec<String> {
        a.iter()
            .filter(|(_, x)| x == arm)
            .map(|(u, _)| u.clone())
            .collect()
    }

    #[test]
    fn rest_arms_split_one_to_one_deterministically() {
        let arms = [rest("a"), rest("b")];
        let c = cands(12);
        let x = allocate(&arms, &c, 7).unwrap();
        assert_eq!(x.len(), 12);
        assert_eq!(members(&x, "a").len(), 6);
        assert_eq!(members(&x, "b").len(), 6);
        let all: HashSet<&String> = x.iter().map(|(u, _)| u).collect();
        assert_eq!(all.len(), 12);
        // Same seed, same draw, whatever the input order.
        let mut rev = c.clone();
        rev.reverse();
        assert_eq!(allocate(&arms, &rev, 7).unwrap(), x);
        // Another seed, another draw.
        assert_ne!(allocate(&arms, &c, 8).unwrap(), x);
        // Odd counts: ±1.
        let x = allocate(&arms, &cands(5), 1).unwrap();
        assert_eq!(members(&x, "a").len(), 3);
        assert_eq!(members(&x, "b").len(), 2);
    }

    #[test]
    fn listed_udids_come_first_and_must_be_eligible() {
        let arms = [
            arm(
                "pinned",
                AllocationSpec {
                    udids: vec!["UDID-03".into(), "UDID-07".into()],
                    ..Default::default()
                },
            ),
            rest("others"),
        ];
        let x = allocate(&arms, &cands(10), 3).unwrap();
        assert_eq!(members(&x, "pinned"), ["UDID-03", "UDID-07"]);
        assert_eq!(members(&x, "others").len(), 8);
        assert!(!members(&x, "others").contains(&"UDID-03".to_string()));

        let e = allocate(&arms, &cands(5), 3).unwrap_err();
        assert_eq!(
            e,
            AllocationError::NotEligible {
                arm: "pinned".into(),
                udid: "UDID-07".into(),
                eligible: 5
            }
        );
        assert!(
            e.to_string().contains("arm \"pinned\" lists UDID-07"),
            "{e}"
        );

        let twice = [
            arm(
                "a",
                AllocationSpec {
                    udids: vec!["UDID-01".into()],
                    ..Default::default()
                },
            ),
            arm(
                "b",
                AllocationSpec {
                    udids: vec!["UDID-01".into()],
                    ..Default::default()
                },
            ),
        ];
        assert_eq!(
            allocate(&twice, &cands(3), 0).unwrap_err(),
            AllocationError::ListedTwice {
                udid: "UDID-01".into(),
                first: "a".into(),
                second: "b".into()
            }
        );
    }

    #[test]
    fn counted_arms_draw_from_the_shuffled_pool() {
        let arms = [
            arm(
                "three",
                AllocationSpec {
                    count: Some(3),
                    ..Default::default()
                },
            ),
            arm(
                "two",
                AllocationSpec {
                    udids: vec!["UDID-00".into()],
                    count: Some(2),
                    ..Default::default()
                },
            ),
            rest("rest"),
        ];
        let x = allocate(&arms, &cands(10), 11).unwrap();
        assert_eq!(members(&x, "three").len(), 3);
        assert_eq!(members(&x, "two").len(), 3);
        assert_eq!(members(&x, "two")[0], "UDID-00");
        assert_eq!(members(&x, "rest").len(), 4);
        assert_eq!(x, allocate(&arms, &cands(10), 11).unwrap());
        // Seeded shuffle, not the input order.
        let firsts: HashSet<Vec<String>> = (0..8)
            .map(|s| members(&allocate(&arms, &cands(10), s).unwrap(), "three"))
            .collect();
        assert!(firsts.len() > 1);

        assert_eq!(
            allocate(&arms, &cands(4), 0).unwrap_err(),
            AllocationError::NotEnough {
                arm: "two".into(),
                wanted: 2,
                available: 0
            }
        );
        // Without a rest arm, leftovers stay unallocated.
        let x = allocate(&arms[..1], &cands(10), 0).unwrap();
        assert_eq!(x.len(), 3);
    }

    #[test]
    fn stratified_arms_balance_every_stratum() {
        let strat = |name: &str| {
            arm(
                name,
                AllocationSpec {
                    stratify: Some(Stratum::Passcode),
                    ..Default::default()
                },
            )
        };
        let arms = [strat("x"), strat("y")];
        // 12 candidates: passcode on i % 3 == 0 → 4 with, 8 without.
        let c = cands(12);
        for seed in 0..20 {
            let a = allocate(&arms, &c, seed).unwrap();
            assert_eq!(a.len(), 12);
            for arm in ["x", "y"] {
                let m = members(&a, arm);
                assert_eq!(m.len(), 6, "seed {seed}");
                let with = m
                    .iter()
                    .filter(|u| c.iter().any(|k| &k.udid == *u && k.passcode == Some(true)))
                    .count();
                assert_eq!(with, 2, "seed {seed} arm {arm}");
            }
        }
        // Odd strata: per stratum and in total within one.
        let mut c = cands(7);
        c[1].passcode = None;
        let a = allocate(&arms, &c, 5).unwrap();
        let (x, y) = (members(&a, "x"), members(&a, "y"));
        assert!(x.len().abs_diff(y.len()) <= 1);
        for s in ["passcode", "no_passcode", "unknown"] {
            let n = |m: &Vec<String>| {
                m.iter()
                    .filter(|u| {
                        stratum_of(c.iter().find(|k| &k.udid == *u).unwrap(), Stratum::Passcode)
                            == s
                    })
                    .count()
            };
            assert!(n(&x).abs_diff(n(&y)) <= 1, "{s}");
        }
        assert_eq!(arm_of(&a, "UDID-01").len(), 1);
    }

    #[test]
    fn stratified_by_model_with_a_cap_then_the_rest() {
        let arms = [
            arm(
                "capped",
                AllocationSpec {
                    count: Some(2),
                    stratify: Some(Stratum::Model),
                    ..Default::default()
                },
            ),
            arm(
                "open",
                AllocationSpec {
                    count: Some(2),
                    stratify: Some(Stratum::Model),
                    ..Default::default()
                },
            ),
            rest("rest"),
        ];
        let mut c = cands(8);
        c[7].model = None;
        let a = allocate(&arms, &c, 9).unwrap();
        assert_eq!(members(&a, "capped").len(), 2);
        assert_eq!(members(&a, "open").len(), 2);
        assert_eq!(members(&a, "rest").len(), 4);
        assert_eq!(a, allocate(&arms, &c, 9).unwrap());
        assert_eq!(
            allocate(&arms, &cands(3), 0).unwrap_err(),
            AllocationError::NotEnough {
                arm: "open".into(),
                wanted: 2,
                available: 1
            }
        );
        let mixed = [
            arms[0].clone(),
            arm(
                "p",
                AllocationSpec {
                    stratify: Some(Stratum::Passcode),
                    ..Default::default()
                },
            ),
        ];
        assert!(matches!(
            allocate(&mixed, &c, 0).unwrap_err(),
            AllocationError::MixedStrata { .. }
        ));
    }

    #[test]
    fn a_duplicate_candidate_is_refused() {
        let mut c = cands(3);
        c.push(c[0].clone());
        assert_eq!(
            allocate(&[rest("a")], &c, 0).unwrap_err(),
            AllocationError::DuplicateCandidate {
                udid: "UDID-00".into()
            }
        );
        assert!(allocate(&[rest("a")], &[], 0).unwrap().is_empty());
    }
}

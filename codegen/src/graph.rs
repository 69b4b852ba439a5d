//! The call graph: which stage calls which. Declared once, in the proto, by a
//! line in each service's leading comment:
//!
//! ```text
//! // Calls: Recall
//! service FineRank { ... }
//! ```
//!
//! (several callees are comma-separated; a stage that calls nothing has no
//! such line). Stages are ordered callers first; ties keep name order.

use prost_build::Service;

use crate::Error;

/// The prefix of the declaring comment line.
const CALLS: &str = "Calls:";

/// One stage in call order with the indexes (into the same order) of the
/// stages it calls.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    /// The service.
    pub service: Service,
    /// Indexes of its callees in the ordered list.
    pub calls: Vec<usize>,
    /// Indexes of its callers in the ordered list.
    pub callers: Vec<usize>,
}

/// Callee names declared on `service`.
fn declared(service: &Service) -> Vec<String> {
    service
        .comments
        .leading
        .iter()
        .filter_map(|line| line.trim().strip_prefix(CALLS))
        .flat_map(|rest| rest.split(','))
        .map(|name| name.trim().trim_end_matches('.').to_owned())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Orders `services` callers first and resolves every `Calls:` line.
pub(crate) fn order(services: &[Service]) -> Result<Vec<Node>, Error> {
    let mut by_name: Vec<&Service> = services.iter().collect();
    by_name.sort_by(|a, b| a.proto_name.cmp(&b.proto_name));
    let index = |name: &str| by_name.iter().position(|s| s.proto_name == name);
    let mut edges: Vec<Vec<usize>> = Vec::new();
    for s in &by_name {
        let mut out = Vec::new();
        for callee in declared(s) {
            let i = index(&callee).ok_or_else(|| {
                Error::Contract(format!(
                    "service {}: `{CALLS} {callee}` names no service (known: {})",
                    s.proto_name,
                    by_name
                        .iter()
                        .map(|s| s.proto_name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            if !out.contains(&i) {
                out.push(i);
            }
        }
        edges.push(out);
    }
    // Kahn's algorithm, smallest name first among the ready ones.
    let mut indegree = vec![0usize; by_name.len()];
    for out in &edges {
        for &j in out {
            indegree[j] += 1;
        }
    }
    let mut order = Vec::new();
    let mut done = vec![false; by_name.len()];
    while order.len() < by_name.len() {
        let Some(next) = (0..by_name.len()).find(|&i| !done[i] && indegree[i] == 0) else {
            let cycle: Vec<&str> = (0..by_name.len())
                .filter(|&i| !done[i])
                .map(|i| by_name[i].proto_name.as_str())
                .collect();
            return Err(Error::Contract(format!(
                "the `{CALLS}` lines form a cycle among {}",
                cycle.join(", ")
            )));
        };
        done[next] = true;
        for &j in &edges[next] {
            indegree[j] -= 1;
        }
        order.push(next);
    }
    let position = |i: usize| order.iter().position(|&o| o == i).unwrap_or(i);
    Ok(order
        .iter()
        .map(|&i| Node {
            service: by_name[i].clone(),
            calls: edges[i].iter().map(|&j| position(j)).collect(),
            callers: (0..by_name.len())
                .filter(|&k| edges[k].contains(&i))
                .map(position)
                .collect(),
        })
        .collect())
}

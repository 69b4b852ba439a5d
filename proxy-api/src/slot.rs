//! The runtime behind one registry slot. The generated code gives every stage
//! a marker implementing [`Service`]; [`Slot`] holds that stage's binding.

use std::sync::Arc;

use tonic::service::RoutesBuilder;

use std::collections::BTreeMap;

use crate::route::{DEFAULT_POOL, LOCAL, RouteRule, Router, Table, Target};
use crate::{
    Balancer, Binding, Limits, RegistryError, RemoteConfig, RuntimeOptions, ServeOptions, Stage,
};

/// What the generator knows about one stage, so generic code can bind it.
pub trait Service: 'static {
    /// The stage trait object, e.g. `dyn Recall`.
    type Api: ?Sized + Send + Sync + 'static;
    /// Which stage this is.
    const STAGE: Stage;
    /// The remote adapter over `balancer`, the pool named `target`.
    fn remote(balancer: Arc<Balancer>, target: &str, options: &RuntimeOptions) -> Arc<Self::Api>;
    /// The adapter that routes every call by `router`'s current table.
    fn routed(router: Arc<Router<Self::Api>>) -> Arc<Self::Api>;
    /// The `local` binding of `imp`: the implementation behind the caller-side stack.
    fn local(imp: Arc<Self::Api>, options: &RuntimeOptions) -> Arc<Self::Api>;
    /// Adds the tonic server for `imp` to `routes`.
    fn add_routes(imp: Arc<Self::Api>, routes: &mut RoutesBuilder, options: &ServeOptions);
}

/// How tonic words a message over the size limit (it answers OUT_OF_RANGE;
/// gRPC says RESOURCE_EXHAUSTED, so both sides rewrite it).
pub(crate) const TOO_LARGE: &str = "message length too large";

/// Where a remote stage lives; names it in every transport error.
#[derive(Clone, Debug)]
pub struct RemoteTarget {
    /// The stage reached.
    pub stage: Stage,
    /// The endpoints balanced over.
    pub endpoints: Vec<String>,
    /// Message size limits of the client.
    pub limits: crate::Limits,
}

impl RemoteTarget {
    /// Rewrites a transport failure of a call to `endpoint` (nothing came
    /// back from the stage itself) as `UNAVAILABLE` naming the stage and the
    /// endpoint; statuses the stage returned pass as-is.
    pub fn status(&self, status: tonic::Status, endpoint: &str) -> tonic::Status {
        use std::error::Error as _;
        let from_transport = status.source().is_some();
        // tonic's own timers (client or server) answer CANCELLED "Timeout expired".
        let timer = status
            .source()
            .is_some_and(|e| e.downcast_ref::<tonic::TimeoutExpired>().is_some())
            || status.message() == "Timeout expired";
        match status.code() {
            tonic::Code::Cancelled if timer => tonic::Status::deadline_exceeded(format!(
                "deadline exceeded calling stage `{}`",
                self.stage.name()
            )),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => status,
            // tonic reports a message over the size limit as OUT_OF_RANGE;
            // gRPC says RESOURCE_EXHAUSTED. The message names the limit.
            tonic::Code::OutOfRange if status.message().contains(TOO_LARGE) => {
                tonic::Status::resource_exhausted(format!(
                    "stage `{}`: {}",
                    self.stage.name(),
                    status.message()
                ))
            }
            _ if from_transport => tonic::Status::unavailable(format!(
                "stage `{}` unreachable at {endpoint}: {}",
                self.stage.name(),
                source_chain(&status)
            )),
            _ => status,
        }
    }
}

/// The status message and its sources, e.g. "transport error: tcp connect
/// error: Connection refused (os error 111)".
fn source_chain(status: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut out = status.message().to_owned();
    let mut next = status.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

/// One stage's binding in a [`Registry`](crate::Registry).
pub struct Slot<S: Service> {
    /// Unbound until config or the app binds it.
    state: State<S::Api>,
}

enum State<T: ?Sized> {
    Unbound,
    /// The implementation (served as is) and the stub callers get.
    Local {
        imp: Arc<T>,
        stub: Arc<T>,
    },
    Remote {
        stub: Arc<T>,
        balancer: Arc<Balancer>,
    },
    /// Behind a route table: the implementation (if hosted) and named pools.
    Routed {
        imp: Option<Arc<T>>,
        /// The local binding's stub, when hosted.
        local: Option<Arc<T>>,
        /// Every pool: its name, config and balancer (reused on reload
        /// while the config is unchanged).
        pools: std::sync::Mutex<Vec<Pool>>,
        router: Arc<Router<T>>,
        stub: Arc<T>,
    },
}

impl<S: Service> Default for Slot<S> {
    fn default() -> Self {
        Self {
            state: State::Unbound,
        }
    }
}

impl<S: Service> Slot<S> {
    /// The bound stage: the implementation itself or the remote adapter.
    pub fn get(&self) -> Result<Arc<S::Api>, RegistryError> {
        match &self.state {
            State::Unbound => Err(RegistryError::unbound(S::STAGE)),
            State::Local { stub, .. } => Ok(Arc::clone(stub)),
            State::Remote { stub, .. } => Ok(Arc::clone(stub)),
            State::Routed { stub, .. } => Ok(Arc::clone(stub)),
        }
    }

    /// Binds the in-process implementation.
    pub fn provide(
        &mut self,
        imp: Arc<S::Api>,
        options: &RuntimeOptions,
    ) -> Result<(), RegistryError> {
        self.refuse_rebind("local")?;
        self.state = State::Local {
            stub: S::local(Arc::clone(&imp), options),
            imp,
        };
        Ok(())
    }

    fn refuse_rebind(&self, requested: &'static str) -> Result<(), RegistryError> {
        let existing = match self.state {
            State::Unbound => return Ok(()),
            State::Local { .. } => "local",
            State::Remote { .. } => "grpc",
            State::Routed { .. } => "routed",
        };
        Err(RegistryError::AlreadyBound {
            stage: S::STAGE.name(),
            existing,
            requested,
        })
    }
}

/// A slot with its stage type erased, so the registry can walk all of them.
pub trait AnySlot {
    /// The slot's stage.
    fn stage(&self) -> Stage;
    /// Binds the slot to the remote `balancer` reaches.
    fn bind_remote(
        &mut self,
        balancer: Arc<Balancer>,
        options: &RuntimeOptions,
    ) -> Result<(), RegistryError>;
    /// Adds the local implementation, if any, to `routes`; true if it did.
    fn add_routes(&self, routes: &mut RoutesBuilder, options: &ServeOptions) -> bool;
    /// How the slot is bound.
    fn binding(&self) -> Binding;
    /// The balancer of a `grpc` binding (of a routed slot: its default
    /// pool's, when it has no local implementation).
    fn balancer(&self) -> Option<Arc<Balancer>>;
    /// Puts the slot behind a route table of `rules` over its local
    /// implementation (if any) and `pools` (plus the `default` pool it is
    /// already bound to), or replaces the table of a routed slot. Returns
    /// the table described, one line each, for logs. Must run inside a
    /// tokio runtime.
    fn set_routes(
        &mut self,
        rules: &[RouteRule],
        pools: &BTreeMap<String, RemoteConfig>,
        limits: Limits,
        options: &RuntimeOptions,
    ) -> Result<Vec<String>, RegistryError>;
    /// Replaces the table of a slot routed since start-up, with `pools` as
    /// its complete set of pools (balancers of unchanged pools are kept);
    /// calls in flight keep the old table.
    fn reload_routes(
        &self,
        rules: &[RouteRule],
        pools: &BTreeMap<String, RemoteConfig>,
        limits: Limits,
        options: &RuntimeOptions,
    ) -> Result<Vec<String>, RegistryError>;
}

impl<S: Service> AnySlot for Slot<S> {
    fn stage(&self) -> Stage {
        S::STAGE
    }

    fn bind_remote(
        &mut self,
        balancer: Arc<Balancer>,
        options: &RuntimeOptions,
    ) -> Result<(), RegistryError> {
        self.refuse_rebind("grpc")?;
        self.state = State::Remote {
            stub: S::remote(Arc::clone(&balancer), DEFAULT_POOL, options),
            balancer,
        };
        Ok(())
    }

    fn add_routes(&self, routes: &mut RoutesBuilder, options: &ServeOptions) -> bool {
        match &self.state {
            State::Local { imp, .. } | State::Routed { imp: Some(imp), .. } => {
                S::add_routes(Arc::clone(imp), routes, options);
                true
            }
            _ => false,
        }
    }

    fn binding(&self) -> Binding {
        match &self.state {
            State::Unbound => Binding::Unbound,
            State::Local { .. } => Binding::Local,
            State::Remote { balancer, .. } => Binding::Grpc(balancer.endpoints().to_vec()),
            State::Routed { imp, pools, .. } => Binding::Routed(
                imp.iter()
                    .map(|_| LOCAL.to_owned())
                    .chain(
                        lock(pools)
                            .iter()
                            .map(|(name, _, b)| format!("{name} ({})", b.endpoints().join(", "))),
                    )
                    .collect(),
            ),
        }
    }

    fn balancer(&self) -> Option<Arc<Balancer>> {
        match &self.state {
            State::Remote { balancer, .. } => Some(Arc::clone(balancer)),
            State::Routed {
                imp: None, pools, ..
            } => lock(pools)
                .iter()
                .find(|(name, _, _)| name == DEFAULT_POOL)
                .map(|(_, _, b)| Arc::clone(b)),
            _ => None,
        }
    }

    fn set_routes(
        &mut self,
        rules: &[RouteRule],
        pools: &BTreeMap<String, RemoteConfig>,
        limits: Limits,
        options: &RuntimeOptions,
    ) -> Result<Vec<String>, RegistryError> {
        let (imp, local, old) = match &self.state {
            State::Routed { .. } => return self.reload_routes(rules, pools, limits, options),
            State::Unbound if pools.is_empty() => return Err(RegistryError::unbound(S::STAGE)),
            State::Unbound => (None, None, Vec::new()),
            State::Local { imp, stub } => {
                (Some(Arc::clone(imp)), Some(Arc::clone(stub)), Vec::new())
            }
            State::Remote { balancer, .. } => (
                None,
                None,
                vec![(
                    DEFAULT_POOL.to_owned(),
                    balancer.config().clone(),
                    Arc::clone(balancer),
                )],
            ),
        };
        // The pool bound from `[remote.<stage>]` stays unless `pools` names it.
        let mut wanted = pools.clone();
        for (name, config, _) in &old {
            wanted.entry(name.clone()).or_insert_with(|| config.clone());
        }
        let pools = keep_or_build::<S>(old, &wanted, limits)?;
        let table = table::<S>(local.as_ref(), &pools, rules, options);
        let described = table.describe(rules);
        let router = Arc::new(Router::new(table));
        self.state = State::Routed {
            imp,
            local,
            pools: std::sync::Mutex::new(pools),
            stub: S::routed(Arc::clone(&router)),
            router,
        };
        Ok(described)
    }

    fn reload_routes(
        &self,
        rules: &[RouteRule],
        pools: &BTreeMap<String, RemoteConfig>,
        limits: Limits,
        options: &RuntimeOptions,
    ) -> Result<Vec<String>, RegistryError> {
        let State::Routed {
            local,
            pools: current,
            router,
            ..
        } = &self.state
        else {
            return Err(RegistryError::NotRouted(S::STAGE.name()));
        };
        let old = lock(current).clone();
        let new_pools = keep_or_build::<S>(old, pools, limits)?;
        let table = table::<S>(local.as_ref(), &new_pools, rules, options);
        let described = table.describe(rules);
        router.replace(table);
        *lock(current) = new_pools;
        Ok(described)
    }
}

/// A registry that has a slot for the stage `S` (generated for every stage),
/// so generic code can reach a slot by its marker type.
pub trait SlotOf<S: Service> {
    /// The slot.
    fn slot(&self) -> &Slot<S>;
    /// The slot, mutable, with the options to bind it with.
    fn slot_mut(&mut self) -> (&mut Slot<S>, &RuntimeOptions);
}

/// A poisoned lock still holds usable data: pools are replaced whole.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A pool: its name, config and balancer.
type Pool = (String, RemoteConfig, Arc<Balancer>);

/// The pools `wanted` describes, keeping the balancer (its connections and
/// health state) of every pool in `old` whose config is unchanged.
fn keep_or_build<S: Service>(
    mut old: Vec<Pool>,
    wanted: &BTreeMap<String, RemoteConfig>,
    limits: Limits,
) -> Result<Vec<Pool>, RegistryError> {
    let mut out = Vec::new();
    for (name, config) in wanted {
        let balancer = match old.iter().position(|(n, c, _)| n == name && c == config) {
            Some(i) => old.swap_remove(i).2,
            None => Balancer::new(S::STAGE, config, limits)?,
        };
        out.push((name.clone(), config.clone(), balancer));
    }
    Ok(out)
}

/// The route table over `local` (when hosted) and `pools`.
fn table<S: Service>(
    local: Option<&Arc<S::Api>>,
    pools: &[Pool],
    rules: &[RouteRule],
    options: &RuntimeOptions,
) -> Table<S::Api> {
    let local = local.map(|stub| Target {
        name: LOCAL.to_owned(),
        stub: Arc::clone(stub),
        balancer: None,
    });
    let remote = pools.iter().map(|(name, _, balancer)| Target {
        name: name.clone(),
        stub: S::remote(Arc::clone(balancer), name, options),
        balancer: Some(Arc::clone(balancer)),
    });
    Table::with_shadows(
        S::STAGE,
        local.into_iter().chain(remote).collect(),
        rules,
        std::sync::Arc::clone(&options.shadows),
    )
}

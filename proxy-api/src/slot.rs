//! The runtime behind one registry slot. The generated code gives every stage
//! a marker implementing [`Service`]; [`Slot`] holds that stage's binding.

use std::sync::Arc;

use tonic::service::RoutesBuilder;

use crate::{Balancer, Binding, RegistryError, RuntimeOptions, ServeOptions, Stage};

/// What the generator knows about one stage, so generic code can bind it.
pub trait Service: 'static {
    /// The stage trait object, e.g. `dyn Recall`.
    type Api: ?Sized + Send + Sync + 'static;
    /// Which stage this is.
    const STAGE: Stage;
    /// The remote adapter over `balancer`.
    fn remote(balancer: Arc<Balancer>, options: &RuntimeOptions) -> Arc<Self::Api>;
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
    /// The balancer of a `grpc` binding.
    fn balancer(&self) -> Option<Arc<Balancer>>;
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
            stub: S::remote(Arc::clone(&balancer), options),
            balancer,
        };
        Ok(())
    }

    fn add_routes(&self, routes: &mut RoutesBuilder, options: &ServeOptions) -> bool {
        match &self.state {
            State::Local { imp, .. } => {
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
        }
    }

    fn balancer(&self) -> Option<Arc<Balancer>> {
        match &self.state {
            State::Remote { balancer, .. } => Some(Arc::clone(balancer)),
            _ => None,
        }
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

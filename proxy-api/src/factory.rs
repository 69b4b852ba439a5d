//! How a stage crate plugs into a process without the process naming it:
//! each crate exports a [`StageFactory`] (its config section and how to
//! build it), and the app lists the factories once. Everything a stage needs
//! from outside comes through [`Deps`]: its downstream stages from the
//! registry, shared data (the catalogue, ...) from [`Resources`].

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{ConfigError, Registry, RegistryError, Service, SlotOf};

/// A stage could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

impl BuildError {
    /// An error with `message`.
    pub fn new(message: impl std::fmt::Display) -> Self {
        Self(message.to_string())
    }
}

impl From<RegistryError> for BuildError {
    fn from(e: RegistryError) -> Self {
        Self(e.to_string())
    }
}

impl From<ConfigError> for BuildError {
    fn from(e: ConfigError) -> Self {
        Self(e.to_string())
    }
}

/// What a stage crate exports so an app can configure and build it generically.
pub trait StageFactory: 'static {
    /// The stage's registry marker (`RecallService`).
    type Service: Service;
    /// Its config section, keyed by the stage's name (`[recall]`).
    type Config: Clone
        + Debug
        + Default
        + PartialEq
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static;

    /// Checks the section; errors name the key (`recall.ann_k`).
    fn validate(config: &Self::Config) -> Result<(), ConfigError>;

    /// Builds the stage. Its downstream stages are already bound in the
    /// registry `deps` reads from.
    fn build(
        config: &Self::Config,
        deps: &Deps<'_>,
    ) -> Result<Arc<<Self::Service as Service>::Api>, BuildError>;
}

/// What a stage is built from.
pub struct Deps<'a> {
    /// The registry, with every downstream of the stage bound.
    pub registry: &'a Registry,
    /// Shared data.
    pub resources: &'a Resources,
}

impl Deps<'_> {
    /// The downstream stage `S`, as this process reaches it.
    pub fn downstream<S: Service>(&self) -> Result<Arc<S::Api>, BuildError>
    where
        Registry: SlotOf<S>,
    {
        Ok(self.registry.get::<S>()?)
    }

    /// The shared value of type `T`, made on first use.
    pub fn resource<T: Any + Send + Sync>(&self) -> Result<Arc<T>, BuildError> {
        self.resources.get::<T>()?.ok_or_else(|| {
            BuildError::new(format!(
                "{} is not provided by this process",
                std::any::type_name::<T>()
            ))
        })
    }

    /// The shared value of type `T` if the process provides one.
    pub fn optional<T: Any + Send + Sync>(&self) -> Result<Option<Arc<T>>, BuildError> {
        self.resources.get::<T>()
    }
}

type Value = Arc<dyn Any + Send + Sync>;
type Make = Box<dyn FnOnce() -> Result<Value, BuildError> + Send>;

enum Entry {
    Ready(Value),
    Lazy(Make),
}

/// Shared values by type; a lazy one is made when a stage first asks, so a
/// process hosting no stage that reads the catalogue never builds it.
#[derive(Default)]
pub struct Resources {
    /// By type.
    entries: Mutex<HashMap<TypeId, Entry>>,
}

impl Resources {
    /// Provides `value`.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: Arc<T>) {
        if let Ok(entries) = self.entries.get_mut() {
            entries.insert(TypeId::of::<T>(), Entry::Ready(value));
        }
    }

    /// Provides the value `make` returns, made on first use.
    pub fn lazy<T: Any + Send + Sync>(
        &mut self,
        make: impl FnOnce() -> Result<T, BuildError> + Send + 'static,
    ) {
        if let Ok(entries) = self.entries.get_mut() {
            entries.insert(
                TypeId::of::<T>(),
                Entry::Lazy(Box::new(move || Ok(Arc::new(make()?) as Value))),
            );
        }
    }

    /// The value of type `T`, made now if it is lazy; `None` if not provided.
    pub fn get<T: Any + Send + Sync>(&self) -> Result<Option<Arc<T>>, BuildError> {
        let mut entries = self
            .entries
            .lock()
            .map_err(|_| BuildError::new("resources poisoned"))?;
        let key = TypeId::of::<T>();
        let value = match entries.remove(&key) {
            None => return Ok(None),
            Some(Entry::Ready(v)) => v,
            Some(Entry::Lazy(make)) => make()?,
        };
        entries.insert(key, Entry::Ready(Arc::clone(&value)));
        Ok(value.downcast::<T>().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lazy_resources_are_made_once_on_first_use() {
        let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut r = Resources::default();
        let counter = Arc::clone(&made);
        r.lazy(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(7u32)
        });
        assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(r.get::<u32>().expect("ok").as_deref(), Some(&7));
        assert_eq!(r.get::<u32>().expect("ok").as_deref(), Some(&7));
        assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(r.get::<u64>().expect("ok").is_none());
    }
}

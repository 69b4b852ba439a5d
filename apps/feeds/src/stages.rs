//! The stage crates this binary links. The list itself is the `stages { .. }`
//! block of the `Config` declaration in `config.rs`, the one line to extend
//! when a stage is added; this macro turns it into the config's stage
//! sections (`[business]`, `[recall]`, ...), their validation, and the
//! wiring that builds each hosted stage through its crate's
//! [`proxy_api::StageFactory`].

/// Declares the config struct with one more field per linked stage
/// (`key => factory`, where `key` is the stage's `Stage::name()`), plus
/// `Config::validate_stages`, [`LINKED`] and [`provide`].
macro_rules! config_with_stages {
    (
        $(#[$meta:meta])*
        pub struct $config:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $fty:ty, )*
        }
        stages {
            $($key:ident => $factory:ty),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub struct $config {
            $( $(#[$fmeta])* pub $field: $fty, )*
            $(
                #[doc = concat!("The `", stringify!($key), "` stage's section.")]
                pub $key: <$factory as proxy_api::StageFactory>::Config,
            )*
        }

        impl $config {
            /// Checks every stage section; errors name the key.
            pub fn validate_stages(&self) -> Result<(), proxy_api::ConfigError> {
                $( <$factory as proxy_api::StageFactory>::validate(&self.$key)?; )*
                Ok(())
            }
        }

        /// Every linked stage, in the order listed.
        pub const LINKED: &[proxy_api::Stage] = &[
            $( <<$factory as proxy_api::StageFactory>::Service as proxy_api::Service>::STAGE, )*
        ];

        /// Builds the hosted `stage` from its section and provides it to
        /// `registry`, whose slots for the stage's downstreams must already
        /// be bound.
        pub fn provide(
            stage: proxy_api::Stage,
            config: &$config,
            registry: &mut proxy_api::Registry,
            resources: &proxy_api::Resources,
        ) -> Result<(), proxy_api::BuildError> {
            $({
                type Service = <$factory as proxy_api::StageFactory>::Service;
                if stage == <Service as proxy_api::Service>::STAGE {
                    let deps = proxy_api::Deps { registry, resources };
                    let imp = <$factory as proxy_api::StageFactory>::build(&config.$key, &deps)?;
                    return Ok(registry.provide::<Service>(imp)?);
                }
            })*
            Err(proxy_api::BuildError::new(format!(
                "stage `{}` is not linked into this binary",
                stage.name()
            )))
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::config::LINKED;

    #[test]
    fn every_stage_of_the_contract_is_linked_once() {
        let mut linked = LINKED.to_vec();
        linked.sort();
        let mut all = proxy_api::Stage::ALL.to_vec();
        all.sort();
        assert_eq!(linked, all);
    }
}

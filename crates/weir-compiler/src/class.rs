//! Which Ingresses belong to weir.
//!
//! In order, as the Ingress API defines it:
//! 1. `spec.ingressClassName`, when set, decides alone. The class is ours if
//!    an IngressClass of that name names our controller, or if no such
//!    IngressClass exists and the name is our configured class name (so the
//!    manifest-folder provider works without an IngressClass object).
//! 2. Otherwise the legacy `kubernetes.io/ingress.class` annotation, compared
//!    with the configured class name.
//! 3. Otherwise the Ingress is ours if one of our IngressClasses is marked
//!    `ingressclass.kubernetes.io/is-default-class: "true"`, or if the
//!    operator asked to serve class-less Ingresses.
//!
//! An Ingress of another class is not ours and gets no diagnostic: it is
//! another controller's business.

use std::collections::BTreeSet;

use k8s_openapi::api::networking::v1::Ingress;

use crate::annotations::{DEFAULT_CLASS, LEGACY_CLASS};
use crate::{CompileOptions, Inputs};

pub(crate) struct Classes<'a> {
    ours: BTreeSet<&'a str>,
    foreign: BTreeSet<&'a str>,
    configured: &'a str,
    default_is_ours: bool,
}

impl<'a> Classes<'a> {
    pub(crate) fn new(inputs: &'a Inputs, options: &'a CompileOptions) -> Self {
        let mut ours = BTreeSet::new();
        let mut foreign = BTreeSet::new();
        let mut default_is_ours = options.watch_ingress_without_class;
        for (name, class) in &inputs.ingress_classes {
            let controller = class.spec.as_ref().and_then(|s| s.controller.as_deref());
            if controller == Some(options.controller_name.as_str()) {
                ours.insert(name.as_str());
                let is_default = class
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_CLASS))
                    .is_some_and(|v| v == "true");
                default_is_ours |= is_default;
            } else {
                foreign.insert(name.as_str());
            }
        }
        Classes {
            ours,
            foreign,
            configured: &options.class_name,
            default_is_ours,
        }
    }

    pub(crate) fn is_ours(&self, ing: &Ingress) -> bool {
        if let Some(class) = ing
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
        {
            return self.ours.contains(class)
                || (class == self.configured && !self.foreign.contains(class));
        }
        if let Some(class) = ing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS))
        {
            return class == self.configured;
        }
        self.default_is_ours
    }
}

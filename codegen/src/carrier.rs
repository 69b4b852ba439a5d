//! Messages that carry a pass-through field. A message type whose comment
//! has a `Pass-through:` line (the user context) travels undecoded through
//! the stages that only forward it; every message with a singular field of
//! such a type (a *carrier*) is written here instead of by prost, with that
//! field as `Option<crate::PassThrough<T>>` and a `prost::Message` impl that
//! slices the field out of the received buffer and writes it back as it
//! came. Every other field is encoded exactly as prost's derive would.

use proc_macro2::TokenStream;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet};
use quote::{format_ident, quote};

use crate::Error;

/// The comment marker of a pass-through message type.
const MARKER: &str = "Pass-through:";

/// One carrier: its fully qualified proto name and Rust name.
pub(crate) struct Carrier<'a> {
    /// `.feeds.v1.RecallRequest`.
    pub(crate) proto: String,
    /// `RecallRequest`.
    pub(crate) rust: String,
    file: &'a FileDescriptorProto,
    index: usize,
    message: &'a DescriptorProto,
}

/// Leading comment of the element at `path` in `file`, as lines.
fn comment(file: &FileDescriptorProto, path: &[i32]) -> Vec<String> {
    file.source_code_info
        .as_ref()
        .and_then(|info| info.location.iter().find(|l| l.path == path))
        .and_then(|l| l.leading_comments.as_deref())
        .map(|c| c.lines().map(|l| l.trim_end().to_owned()).collect())
        .unwrap_or_default()
}

fn fq(file: &FileDescriptorProto, message: &DescriptorProto) -> String {
    format!(".{}.{}", file.package(), message.name())
}

/// The pass-through message types, by fully qualified name.
pub(crate) fn pass_through_types(fds: &FileDescriptorSet) -> Vec<String> {
    let mut out = Vec::new();
    for file in &fds.file {
        for (i, m) in file.message_type.iter().enumerate() {
            if comment(file, &[4, i as i32])
                .iter()
                .any(|l| l.trim().starts_with(MARKER))
            {
                out.push(fq(file, m));
            }
        }
    }
    out
}

/// Every top-level message with a singular field of a pass-through type.
pub(crate) fn carriers<'a>(fds: &'a FileDescriptorSet, pass: &[String]) -> Vec<Carrier<'a>> {
    let mut out = Vec::new();
    for file in &fds.file {
        for (index, message) in file.message_type.iter().enumerate() {
            let carries = message
                .field
                .iter()
                .any(|f| f.label() != Label::Repeated && pass.iter().any(|p| p == f.type_name()));
            if carries {
                out.push(Carrier {
                    proto: fq(file, message),
                    rust: message.name().to_owned(),
                    file,
                    index,
                    message,
                });
            }
        }
    }
    out
}

/// The names of the pass-through fields of the message `proto_type`
/// (`.feeds.v1.RankRequest`).
pub(crate) fn pass_through_fields(fds: &FileDescriptorSet, proto_type: &str) -> Vec<String> {
    let pass = pass_through_types(fds);
    fds.file
        .iter()
        .flat_map(|file| file.message_type.iter().map(move |m| (file, m)))
        .filter(|(file, m)| fq(file, m) == proto_type)
        .flat_map(|(_, m)| &m.field)
        .filter(|f| f.label() != Label::Repeated && pass.iter().any(|p| p == f.type_name()))
        .map(|f| f.name().to_owned())
        .collect()
}

/// How one field is held and which prost encoding module writes it.
enum Kind {
    /// proto3 scalar: written unless it holds its default.
    Scalar {
        module: TokenStream,
        default: TokenStream,
    },
    /// Singular message: `Option<T>`.
    Message,
    /// Repeated string, bytes or message.
    Repeated { module: TokenStream },
    /// Repeated number: packed.
    Packed { module: TokenStream },
    /// The pass-through field.
    PassThrough,
}

/// The Rust path of a message type `.feeds.v1.Assignment` (same package).
fn message_path(type_name: &str) -> Result<syn::Path, Error> {
    let name = type_name.rsplit('.').next().unwrap_or(type_name);
    syn::parse_str(&format!("crate::pb::{name}"))
        .map_err(|e| Error::Format(format!("type {type_name}: {e}")))
}

/// The scalar's Rust type, prost module and default value.
fn scalar(ty: Type) -> Option<(TokenStream, TokenStream, TokenStream)> {
    Some(match ty {
        Type::String => (
            quote!(::prost::alloc::string::String),
            quote!(string),
            quote!(""),
        ),
        Type::Bytes => (
            quote!(::prost::alloc::vec::Vec<u8>),
            quote!(bytes),
            quote!(b"" as &[u8]),
        ),
        Type::Bool => (quote!(bool), quote!(bool), quote!(false)),
        Type::Uint32 => (quote!(u32), quote!(uint32), quote!(0u32)),
        Type::Uint64 => (quote!(u64), quote!(uint64), quote!(0u64)),
        Type::Int32 => (quote!(i32), quote!(int32), quote!(0i32)),
        Type::Int64 => (quote!(i64), quote!(int64), quote!(0i64)),
        Type::Enum => (quote!(i32), quote!(int32), quote!(0i32)),
        Type::Float => (quote!(f32), quote!(float), quote!(0f32)),
        Type::Double => (quote!(f64), quote!(double), quote!(0f64)),
        _ => return None,
    })
}

/// The field's Rust type and kind.
fn field_kind(
    carrier: &str,
    f: &FieldDescriptorProto,
    pass: &[String],
) -> Result<(TokenStream, Kind), Error> {
    let unsupported = || {
        Error::Contract(format!(
            "{carrier}.{}: this field's kind is not supported in a message carrying a pass-through field",
            f.name()
        ))
    };
    if f.proto3_optional.unwrap_or(false) || f.oneof_index.is_some() {
        return Err(unsupported());
    }
    let repeated = f.label() == Label::Repeated;
    Ok(match (f.r#type(), repeated) {
        (Type::Message, false) if pass.iter().any(|p| p == f.type_name()) => {
            let path = message_path(f.type_name())?;
            (
                quote!(::core::option::Option<crate::PassThrough<#path>>),
                Kind::PassThrough,
            )
        }
        (Type::Message, false) => {
            let path = message_path(f.type_name())?;
            (quote!(::core::option::Option<#path>), Kind::Message)
        }
        (Type::Message, true) => {
            // Map fields are repeated entry messages; prost holds them as maps.
            if f.type_name().ends_with("Entry") {
                return Err(unsupported());
            }
            let path = message_path(f.type_name())?;
            (
                quote!(::prost::alloc::vec::Vec<#path>),
                Kind::Repeated {
                    module: quote!(message),
                },
            )
        }
        (ty, false) => {
            let (rust, module, default) = scalar(ty).ok_or_else(unsupported)?;
            (rust, Kind::Scalar { module, default })
        }
        (ty @ (Type::String | Type::Bytes), true) => {
            let (rust, module, _) = scalar(ty).ok_or_else(unsupported)?;
            (
                quote!(::prost::alloc::vec::Vec<#rust>),
                Kind::Repeated { module },
            )
        }
        (ty, true) => {
            let (rust, module, _) = scalar(ty).ok_or_else(unsupported)?;
            (
                quote!(::prost::alloc::vec::Vec<#rust>),
                Kind::Packed { module },
            )
        }
    })
}

fn docs(lines: &[String]) -> TokenStream {
    let lines = lines.iter().map(|l| format!(" {}", l.trim()));
    quote!(#(#[doc = #lines])*)
}

/// The struct and `prost::Message` impl of one carrier.
pub(crate) fn emit(c: &Carrier<'_>, pass: &[String]) -> Result<TokenStream, Error> {
    let name = format_ident!("{}", c.rust);
    let struct_name = c.rust.as_str();
    let mut fields = Vec::new();
    let mut encode = Vec::new();
    let mut merge = Vec::new();
    let mut len = Vec::new();
    for (j, f) in c.message.field.iter().enumerate() {
        let (ty, kind) = field_kind(&c.proto, f, pass)?;
        let field = format_ident!("{}", f.name());
        let field_name = f.name();
        let tag = u32::try_from(f.number())
            .map_err(|_| Error::Contract(format!("{}.{}: bad tag", c.proto, f.name())))?;
        let doc = docs(&comment(c.file, &[4, c.index as i32, 2, j as i32]));
        fields.push(quote!(#doc pub #field: #ty));
        let push = quote!(.map_err(|mut error| { error.push(#struct_name, #field_name); error }));
        match kind {
            Kind::Scalar { module, default } => {
                encode.push(quote! {
                    if self.#field != #default {
                        ::prost::encoding::#module::encode(#tag, &self.#field, buf);
                    }
                });
                merge.push(quote! {
                    #tag => ::prost::encoding::#module::merge(wire_type, &mut self.#field, buf, ctx) #push,
                });
                len.push(quote! {
                    if self.#field != #default { ::prost::encoding::#module::encoded_len(#tag, &self.#field) } else { 0 }
                });
            }
            Kind::Message => {
                encode.push(quote! {
                    if let ::core::option::Option::Some(ref value) = self.#field {
                        ::prost::encoding::message::encode(#tag, value, buf);
                    }
                });
                merge.push(quote! {
                    #tag => ::prost::encoding::message::merge(
                        wire_type,
                        self.#field.get_or_insert_with(::core::default::Default::default),
                        buf,
                        ctx,
                    ) #push,
                });
                len.push(quote! {
                    self.#field.as_ref().map_or(0, |value| ::prost::encoding::message::encoded_len(#tag, value))
                });
            }
            Kind::Repeated { module } => {
                encode.push(quote! {
                    ::prost::encoding::#module::encode_repeated(#tag, &self.#field, buf);
                });
                merge.push(quote! {
                    #tag => ::prost::encoding::#module::merge_repeated(wire_type, &mut self.#field, buf, ctx) #push,
                });
                len.push(quote! {
                    ::prost::encoding::#module::encoded_len_repeated(#tag, &self.#field)
                });
            }
            Kind::Packed { module } => {
                encode.push(quote! {
                    ::prost::encoding::#module::encode_packed(#tag, &self.#field, buf);
                });
                merge.push(quote! {
                    #tag => ::prost::encoding::#module::merge_repeated(wire_type, &mut self.#field, buf, ctx) #push,
                });
                len.push(quote! {
                    ::prost::encoding::#module::encoded_len_packed(#tag, &self.#field)
                });
            }
            Kind::PassThrough => {
                encode.push(quote! {
                    if let ::core::option::Option::Some(ref value) = self.#field {
                        value.encode_field(#tag, buf);
                    }
                });
                merge.push(quote! {
                    #tag => crate::PassThrough::merge_field(&mut self.#field, wire_type, buf, ctx) #push,
                });
                len.push(quote! {
                    self.#field.as_ref().map_or(0, |value| value.encoded_len_field(#tag))
                });
            }
        }
    }
    let doc = docs(&comment(c.file, &[4, c.index as i32]));
    let lens = if len.is_empty() {
        quote!(0)
    } else {
        quote!(0 #(+ #len)*)
    };
    Ok(quote! {
        #doc
        #[derive(Clone, PartialEq, Debug, Default)]
        pub struct #name {
            #(#fields,)*
        }

        impl ::prost::Message for #name {
            fn encode_raw(&self, buf: &mut impl ::prost::bytes::BufMut) {
                #(#encode)*
            }

            fn merge_field(
                &mut self,
                tag: u32,
                wire_type: ::prost::encoding::wire_type::WireType,
                buf: &mut impl ::prost::bytes::Buf,
                ctx: ::prost::encoding::DecodeContext,
            ) -> ::core::result::Result<(), ::prost::DecodeError> {
                match tag {
                    #(#merge)*
                    _ => ::prost::encoding::skip_field(wire_type, tag, buf, ctx),
                }
            }

            fn encoded_len(&self) -> usize {
                #lens
            }

            fn clear(&mut self) {
                *self = ::core::default::Default::default();
            }
        }
    })
}

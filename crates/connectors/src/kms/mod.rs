//! KMS providers over the network, implementing [`strongroom_crypto::Kms`].

pub mod openbao;

pub use openbao::OpenBaoTransit;

//! Frames reach a member from any peer or relay: decoding them, handing them to the
//! channels, and decoding the federation messages inside must never panic.
#![no_main]

use std::{sync::OnceLock, time::Instant};

use bitcoin::secp256k1::{Keypair, SECP256K1, SecretKey};
use libfuzzer_sys::fuzz_target;
use tenure_frost_fed::{
    MemberId,
    channel::{ChannelConfig, ChannelKey, Channels, frame, noise_keypair},
    dkg::message as dkg_message,
    sign::message as sign_message,
};

fn keypair(n: u8) -> Keypair {
    let secret = SecretKey::from_slice(&[n; 32]).unwrap_or_else(|_| unreachable!());
    Keypair::from_secret_key(SECP256K1, &secret)
}

/// Two members' keys, made once.
fn directory() -> &'static (Vec<u8>, Vec<ChannelKey>) {
    static KEYS: OnceLock<(Vec<u8>, Vec<ChannelKey>)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (mine, my_public) = noise_keypair().unwrap_or_default();
        let (_, their_public) = noise_keypair().unwrap_or_default();
        let directory = vec![
            ChannelKey::bind(&keypair(1), my_public, vec![1]),
            ChannelKey::bind(&keypair(2), their_public, vec![2]),
        ];
        (mine, directory)
    })
}

fuzz_target!(|bytes: &[u8]| {
    let _ = frame::decode(bytes);
    let _ = dkg_message::decode(bytes);
    let _ = sign_message::decode(bytes);
    let (private, directory) = directory();
    let me = MemberId::from(keypair(1).x_only_public_key().0);
    let mut channels = Channels::new(me, private.clone(), directory, ChannelConfig::default());
    let _ = channels.handle(bytes, Instant::now());
});

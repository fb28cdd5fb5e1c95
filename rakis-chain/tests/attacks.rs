//! The attacks on the first oracle, on a real anvil node and the real contract, each of which
//! succeeded against it (it counted any self-registered key, let the submitter choose who was
//! paid, recorded "foreign" results on a signature floor, could be blocked by a callback to an
//! address without code, and pushed refunds to requesters that could not take them), and a
//! test that reaches every custom error of the contract.

mod common;

use std::collections::BTreeSet;

use alloy::primitives::{Address as EvmAddress, Bytes, FixedBytes, U256};
use alloy::providers::Provider;
use common::*;
use rakis_chain::contracts::{RakisOracle, SampleConsumer};
use rakis_chain::dev::{AnvilOptions, LocalChain};
use rakis_chain::evm::evm_address;
use rakis_chain::slashing::signed_commit;
use rakis_chain::{EvmChain, EvmError, OracleDeployment, OracleRevert};
use rakis_core::consensus::commit_statement;
use rakis_core::identity::{eth_signed_message_hash, keccak256, public_key_xy};
use rakis_core::misbehaviour::{sign_statement, SignedCommit};
use rakis_core::{Misbehaviour, NodeKey, RequestId};

/// Gas limit of submissions sent here directly (an estimate without a gas price misses the
/// reimbursement's storage write).
const GAS: u64 = 3_000_000;

fn addr(k: &NodeKey) -> EvmAddress {
    evm_address(&k.address())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_keys_cannot_forge_a_result() {
    init_tracing();
    let (chain, evm, _members) = chain_with_members(5).await;
    let s = request_and_sign(&evm, &(0..5).map(node_key).collect::<Vec<_>>(), 3, 1_000).await;
    advance_time(&evm, 2).await;
    let id = FixedBytes(s.request.id().0);
    // Four fresh keys (the old oracle needed max(floor, ceil(share × quorum)) = 3 of them,
    // registered for free) sign a text of their choice.
    // They name the real committee as payees, so only their signatures can give them away.
    let fresh: Vec<NodeKey> = (100..104).map(node_key).collect();
    let forged = resign(&s.results, &fresh);
    let sub = submission(&s.epoch, &forged);
    assert!(matches!(
        revert_of(evm.oracle().submitResult(id, sub.clone())).await,
        OracleRevert::NotBonded { .. }
    ));
    // Staked and registered after the epoch started: still outside every committee of it.
    let owner = chain.connect(0).await.unwrap();
    for k in &fresh {
        owner
            .register_node(k, 1_000_000_000_000_000_000)
            .await
            .unwrap();
    }
    assert!(matches!(
        revert_of(evm.oracle().submitResult(id, sub)).await,
        OracleRevert::NotInCommittee { .. }
    ));
    // Three committee members of five (one short of the threshold) cannot either.
    let three = submission(&s.epoch, &s.results[..3]);
    assert_eq!(
        revert_of(evm.oracle().submitResult(id, three)).await,
        OracleRevert::TooFewSignatures {
            provided: 3,
            required: 4
        }
    );
    // Signatures bound to another epoch or contract do not verify here: the digest differs,
    // so they recover to keys that hold no stake.
    let mut elsewhere = s.results.clone();
    let other = rakis_core::testing::QuorumFixture::new(5, 1).results_for(
        s.request.id(),
        &(0..5).map(node_key).collect::<Vec<_>>(),
        rakis_core::Hash32([9; 32]),
    );
    for (e, o) in elsewhere.iter_mut().zip(&other) {
        e.signature = o.signature;
    }
    assert!(matches!(
        revert_of(
            evm.oracle()
                .submitResult(id, submission(&s.epoch, &elsewhere))
        )
        .await,
        OracleRevert::NotBonded { .. }
    ));
    assert!(evm.result_of(&s.request.id()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_replayed_after_removal_does_nothing() {
    init_tracing();
    let chain = LocalChain::start(AnvilOptions::default()).await.unwrap();
    let owner = chain.connect(0).await.unwrap();
    let key = node_key(7);
    // Capture the registration transaction's arguments as an observer of the chain would.
    owner
        .register_node(&key, 1_000_000_000_000_000_000)
        .await
        .unwrap();
    let logs = owner
        .logs(
            <RakisOracle::NodeRegistered as alloy::sol_types::SolEvent>::SIGNATURE_HASH,
            0,
            owner.provider().get_block_number().await.unwrap(),
        )
        .await
        .unwrap();
    let tx = owner
        .provider()
        .get_transaction_by_hash(logs[0].transaction_hash.unwrap())
        .await
        .unwrap()
        .unwrap();
    let input = alloy::consensus::Transaction::input(&tx).clone();
    let call =
        <RakisOracle::registerCall as alloy::sol_types::SolCall>::abi_decode(&input).unwrap();
    // Left (its stake returned after unbonding): the old signature does not register it again.
    owner.exit_node(addr(&key)).await.unwrap();
    advance_time(&owner, 9 * 24 * 3_600).await;
    owner.withdraw_stake(addr(&key)).await.unwrap();
    let replay = owner
        .oracle()
        .register(call.publicKey.clone(), call.signature.clone())
        .value(U256::from(1_000_000_000_000_000_000u128));
    assert_eq!(
        revert_of(replay).await,
        OracleRevert::InvalidRegistration {
            node: addr(&key).to_string()
        }
    );
    // Ejected by the owner: banned for good, even with a fresh signature.
    let other = node_key(8);
    owner
        .register_node(&other, 1_000_000_000_000_000_000)
        .await
        .unwrap();
    owner.eject_node(addr(&other)).await.unwrap();
    assert!(matches!(
        owner.register_node(&other, 1_000_000_000_000_000_000).await,
        Err(EvmError::Reverted(OracleRevert::NodeBanned { .. }))
    ));
    assert!(!owner.is_active(addr(&key)).await.unwrap());
    assert!(!owner.is_active(addr(&other)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_forgery_and_a_self_paying_submitter_are_refused() {
    init_tracing();
    let (_chain, evm, keys) = chain_with_members(5).await;
    let s = request_and_sign(&evm, &keys, 3, 1_000).await;
    advance_time(&evm, 2).await;
    // A "foreign" result (a request this contract never made): the old oracle recorded it on
    // the signature floor; now nothing but the contract's own requests has a result.
    let foreign = RequestId([0x5A; 32]);
    let forged = rakis_core::testing::QuorumFixture::new(5, 1).results_for(
        foreign,
        &keys,
        s.results[0].config_digest,
    );
    assert_eq!(
        revert_of(
            evm.oracle()
                .submitResult(FixedBytes(foreign.0), submission(&s.epoch, &forged))
        )
        .await,
        OracleRevert::UnknownRequest
    );
    let id = FixedBytes(s.request.id().0);
    // The submitter leaves two accepted nodes out of the payees (or adds itself): the digest
    // the committee signed names the payees, so every signature stops recovering to a member.
    let mut fewer = submission(&s.epoch, &s.results);
    fewer.payees = Bytes::from(fewer.payees[..3 * 33].to_vec());
    assert!(matches!(
        revert_of(evm.oracle().submitResult(id, fewer)).await,
        OracleRevert::NotBonded { .. }
    ));
    let mut itself = submission(&s.epoch, &s.results);
    let mut payees = itself.payees.to_vec();
    payees.extend(node_key(50).node_id().0);
    itself.payees = Bytes::from(payees);
    assert!(matches!(
        revert_of(evm.oracle().submitResult(id, itself)).await,
        OracleRevert::BadPayees { .. }
    ));
    // The honest submission pays the five payees equally, after the submitter's gas.
    let sub = submission(&s.epoch, &s.results);
    let receipt = mined(evm.oracle().submitResult(id, sub).gas(GAS)).await;
    let ev = submitted_event(&evm, &s.request.id()).await;
    let payment = evm.request_state(&s.request.id()).await.unwrap().payment;
    let mut total = ev.reimbursed;
    for k in &keys {
        total += evm.credit_of(addr(k)).await.unwrap();
    }
    assert_eq!(total, U256::from(payment));
    assert_eq!(evm.credit_of(ev.submitter).await.unwrap(), ev.reimbursed);
    // The reimbursement is the gas used at most at base fee + 2 gwei.
    let cap = U256::from(receipt.gas_used + 60_000) * U256::from(receipt.effective_gas_price);
    assert!(ev.reimbursed <= cap, "{} > {cap}", ev.reimbursed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_without_code_cannot_block_fulfilment_and_contract_refunds_are_pulled() {
    init_tracing();
    let (chain, evm, keys) = chain_with_members(5).await;
    // A requester names an address without code as its callback (the old oracle's try/catch
    // reverted the whole submission there: no result, then a refund).
    let params = chain_params("Say hello.", 3, 1_000);
    let need = evm
        .required_payment(params.maxTokens, 100_000)
        .await
        .unwrap();
    let id = evm
        .request_inference(&params, EvmAddress::repeat_byte(0xCA), 100_000, need * 2)
        .await
        .unwrap();
    let s = sign(&evm, id, &keys).await;
    advance_time(&evm, 2).await;
    mined(
        evm.oracle()
            .submitResult(FixedBytes(id.0), submission(&s.epoch, &s.results))
            .gas(GAS),
    )
    .await;
    assert!(!submitted_event(&evm, &id).await.callbackSucceeded);
    assert!(evm.result_of(&id).await.unwrap().is_some());
    assert!(matches!(
        evm.refund(&id).await,
        Err(EvmError::Reverted(OracleRevert::AlreadyFulfilled))
    ));

    // A contract requester without a payable fallback (the old oracle pushed the refund to it
    // and reverted for ever): the refund is credited and the contract pulls it.
    let user = chain.connect(9).await.unwrap();
    let consumer = SampleConsumer::deploy(user.provider().clone(), chain.oracle)
        .await
        .unwrap();
    let payment = U256::from(10_000_000_000_000_000u128);
    mined(
        consumer
            .ask("Unanswered?".into(), MODEL.into(), 3, 1_000)
            .value(payment),
    )
    .await;
    let unanswered = RequestId(consumer.lastRequest().call().await.unwrap().0);
    advance_time(&user, 3 * 3_600).await;
    user.refund(&unanswered).await.unwrap();
    assert_eq!(user.credit_of(*consumer.address()).await.unwrap(), payment);
    let to = EvmAddress::repeat_byte(0x77);
    mined(consumer.claim(to)).await;
    assert_eq!(user.provider().get_balance(to).await.unwrap(), payment);
    assert_eq!(
        user.credit_of(*consumer.address()).await.unwrap(),
        U256::ZERO
    );
}

/// Every custom error in the contract's ABI is reached here, by the call that should meet it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_custom_error_of_the_oracle_is_reached() {
    init_tracing();
    let mut reached: BTreeSet<String> = BTreeSet::new();
    let mut saw = |e: OracleRevert| {
        let name = format!("{e:?}");
        let name = name.split([' ', '{', '(']).next().unwrap().to_string();
        reached.insert(name);
        e
    };
    // Epochs an hour apart, a one-minute submission window.
    let deployment = OracleDeployment {
        epoch_spacing_s: 3_600,
        submission_window_s: 60,
        min_payment_wei: 1,
        ..OracleDeployment::default()
    };
    let chain = LocalChain::start_with(AnvilOptions::default(), &deployment)
        .await
        .unwrap();
    let owner = chain.connect(0).await.unwrap();
    let evm = chain.connect(1).await.unwrap();
    let oracle = evm.oracle();
    let one_ether = U256::from(1_000_000_000_000_000_000u128);

    // Deployment.
    let bad = EvmChain::deploy_oracle(
        &chain.rpc_url(),
        chain.signer(2).unwrap(),
        &OracleDeployment {
            epoch_spacing_s: 0,
            ..OracleDeployment::default()
        },
    )
    .await
    .unwrap_err();
    match bad {
        EvmError::Reverted(r) => assert!(matches!(saw(r), OracleRevert::InvalidConfig { .. })),
        other => panic!("deploying with epoch spacing 0: {other:?}"),
    }

    // Requests before any epoch.
    let params = chain_params("Say hello.", 3, 1_000);
    let pay = U256::from(evm.required_payment(params.maxTokens, 0).await.unwrap() * 2);
    assert_eq!(
        saw(revert_of(
            oracle
                .requestInference(params.clone(), EvmAddress::ZERO, 0)
                .value(pay)
        )
        .await),
        OracleRevert::NoEpoch
    );

    // Registry.
    let keys: Vec<NodeKey> = (0..5).map(node_key).collect();
    let proof = |key: &NodeKey, staker: EvmAddress, nonce: u64| {
        let mut pre = b"rakis/register/v2".to_vec();
        pre.extend(31_337u64.to_be_bytes());
        pre.extend(chain.oracle.0);
        pre.extend(addr(key).0);
        pre.extend(staker.0);
        pre.extend(nonce.to_be_bytes());
        (
            Bytes::from(public_key_xy(&key.node_id()).unwrap().to_vec()),
            Bytes::from(
                key.sign_digest(&eth_signed_message_hash(&keccak256(&pre)))
                    .0
                    .to_vec(),
            ),
        )
    };
    let (pk, _) = proof(&keys[0], evm.sender(), 0);
    let (_, wrong) = proof(&keys[1], evm.sender(), 0);
    assert!(matches!(
        saw(revert_of(oracle.register(pk.clone(), wrong).value(one_ether)).await),
        OracleRevert::InvalidRegistration { .. }
    ));
    let (pk, sig) = proof(&keys[0], evm.sender(), 0);
    assert!(matches!(
        saw(revert_of(oracle.register(pk, sig).value(U256::from(1_000u64))).await),
        OracleRevert::StakeTooLow { .. }
    ));
    chain.register_and_start_epoch(&keys).await.unwrap();
    let (pk, sig) = proof(&keys[0], owner.sender(), 0);
    assert!(matches!(
        saw(revert_of(owner.oracle().register(pk, sig).value(one_ether)).await),
        OracleRevert::AlreadyRegistered { .. }
    ));
    assert_eq!(
        saw(revert_of(oracle.eject(addr(&keys[0]))).await),
        OracleRevert::NotOwner
    );
    assert!(matches!(
        saw(revert_of(oracle.exit(addr(&keys[0]))).await),
        OracleRevert::NotStaker { .. }
    ));
    assert!(matches!(
        saw(revert_of(owner.oracle().exit(addr(&node_key(60)))).await),
        OracleRevert::NotStaker { .. }
    ));
    let leaver = node_key(61);
    owner
        .register_node(&leaver, 1_000_000_000_000_000_000)
        .await
        .unwrap();
    owner.exit_node(addr(&leaver)).await.unwrap();
    assert!(matches!(
        saw(revert_of(owner.oracle().exit(addr(&leaver))).await),
        OracleRevert::NotActive { .. }
    ));
    assert!(matches!(
        saw(revert_of(owner.oracle().eject(addr(&node_key(62)))).await),
        OracleRevert::NotActive { .. }
    ));
    assert!(matches!(
        saw(revert_of(owner.oracle().withdrawStake(addr(&leaver))).await),
        OracleRevert::StakeLocked { .. }
    ));
    let banned = node_key(63);
    owner
        .register_node(&banned, 1_000_000_000_000_000_000)
        .await
        .unwrap();
    owner.eject_node(addr(&banned)).await.unwrap();
    let (pk, sig) = proof(&banned, owner.sender(), 1);
    assert!(matches!(
        saw(revert_of(owner.oracle().register(pk, sig).value(one_ether)).await),
        OracleRevert::NodeBanned { .. }
    ));

    // Epochs.
    let ids: Vec<u8> = keys
        .iter()
        .map(|k| k.node_id())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .flat_map(|n| n.0)
        .collect();
    assert!(matches!(
        saw(revert_of(oracle.advanceEpoch(Bytes::from(ids.clone()))).await),
        OracleRevert::EpochTooSoon { .. }
    ));
    advance_time(&evm, 3_600).await;
    assert!(matches!(
        saw(revert_of(oracle.advanceEpoch(Bytes::from(ids[..4 * 33].to_vec()))).await),
        OracleRevert::InvalidMembers { .. }
    ));
    // The complete list: the five members (the node that left and the banned one are not).
    assert_eq!(
        owner.active_nodes().await.unwrap(),
        keys.iter()
            .map(|k| k.node_id())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert_eq!(owner.advance_epoch().await.unwrap(), 1);
    assert_eq!(owner.epoch(1).await.unwrap().len(), 5);

    // Requests.
    let mut empty = params.clone();
    empty.prompt = String::new();
    assert!(matches!(
        saw(revert_of(
            oracle
                .requestInference(empty, EvmAddress::ZERO, 0)
                .value(pay)
        )
        .await),
        OracleRevert::InvalidRequest { .. }
    ));
    assert!(matches!(
        saw(revert_of(oracle.requestInference(params.clone(), EvmAddress::ZERO, 0)).await),
        OracleRevert::PaymentTooLow { .. }
    ));

    // Results.
    let s = request_and_sign(&evm, &keys, 3, 5_000).await;
    let id = s.request.id();
    let key = FixedBytes(id.0);
    let good = submission(&s.epoch, &s.results);
    assert!(matches!(
        saw(revert_of(oracle.submitResult(key, good.clone())).await),
        OracleRevert::TooEarly { .. }
    ));
    advance_time(&evm, 6).await;
    assert_eq!(
        saw(revert_of(oracle.submitResult(FixedBytes([1; 32]), good.clone())).await),
        OracleRevert::UnknownRequest
    );
    let mut long = good.clone();
    long.output = "x".repeat(32 * 64 + 1);
    assert!(matches!(
        saw(revert_of(oracle.submitResult(key, long)).await),
        OracleRevert::OutputTooLong { .. }
    ));
    let mut heavier = good.clone();
    heavier.weights[0] += 1;
    assert!(matches!(
        saw(revert_of(oracle.submitResult(key, heavier)).await),
        OracleRevert::EpochMismatch { epoch: 0 }
    ));
    let mut outsider = good.clone();
    outsider.payees = Bytes::from(node_key(70).node_id().0.to_vec());
    assert!(matches!(
        saw(revert_of(oracle.submitResult(key, outsider)).await),
        OracleRevert::BadPayees { index: 0 }
    ));
    let mut twice = good.clone();
    twice.signatures[1] = twice.signatures[0].clone();
    assert!(matches!(
        saw(revert_of(oracle.submitResult(key, twice)).await),
        OracleRevert::SignersNotSorted { index: 1 }
    ));
    let mut short = good.clone();
    short.signatures[0] = Bytes::from(vec![1u8; 64]);
    assert!(matches!(
        saw(revert_of(oracle.submitResult(key, short)).await),
        OracleRevert::InvalidSignature { index: 0 }
    ));
    let fresh = resign(&s.results[..1], &[node_key(80)]);
    assert!(matches!(
        saw(revert_of(oracle.submitResult(key, submission(&s.epoch, &fresh))).await),
        OracleRevert::NotBonded { .. }
    ));
    let mut three = good.clone();
    three.signatures.truncate(3);
    assert!(matches!(
        saw(revert_of(oracle.submitResult(key, three)).await),
        OracleRevert::TooFewSignatures { .. }
    ));
    // Quorum 1 among five members: committees of two, so three members sit outside.
    let small = request_and_sign(&evm, &keys, 1, 1_000).await;
    advance_time(&evm, 2).await;
    let committee = small.epoch.committee(&small.request);
    let (inside, outside): (Vec<NodeKey>, Vec<NodeKey>) = keys
        .iter()
        .cloned()
        .partition(|k| committee.contains(&k.node_id()));
    let signed = sign(&evm, small.request.id(), &inside).await;
    let sub = submission(&small.epoch, &resign(&signed.results, &outside));
    assert!(matches!(
        saw(revert_of(oracle.submitResult(FixedBytes(small.request.id().0), sub)).await),
        OracleRevert::NotInCommittee { .. }
    ));
    // The exact-gas callback: a submission without gas for it.
    let user = chain.connect(9).await.unwrap();
    let consumer = SampleConsumer::deploy(user.provider().clone(), chain.oracle)
        .await
        .unwrap();
    mined(
        consumer
            .ask("Call me back.".into(), MODEL.into(), 3, 1_000)
            .value(U256::from(10_000_000_000_000_000u128)),
    )
    .await;
    let called = RequestId(consumer.lastRequest().call().await.unwrap().0);
    let c = sign(&evm, called, &keys).await;
    advance_time(&evm, 2).await;
    let csub = submission(&c.epoch, &c.results);
    let enough = oracle
        .submitResult(FixedBytes(called.0), csub.clone())
        .estimate_gas()
        .await
        .unwrap();
    assert!(matches!(
        saw(revert_of(
            oracle
                .submitResult(FixedBytes(called.0), csub.clone())
                .gas(enough - 150_000)
        )
        .await),
        OracleRevert::InsufficientGas { .. }
    ));
    // Stored once.
    mined(evm.oracle().submitResult(key, good.clone()).gas(GAS)).await;
    assert_eq!(
        saw(revert_of(oracle.submitResult(key, good)).await),
        OracleRevert::AlreadyFulfilled
    );
    // The beacon of an old request: gone after 256 blocks unless recorded.
    mine(&evm, 300).await;
    assert_eq!(
        saw(revert_of(oracle.submitResult(FixedBytes(called.0), csub)).await),
        OracleRevert::BeaconUnavailable
    );
    // Refunds and expiry.
    let late = request_and_sign(&evm, &keys, 3, 1_000).await;
    let late_key = FixedBytes(late.request.id().0);
    assert!(matches!(
        saw(revert_of(oracle.refund(late_key)).await),
        OracleRevert::NotExpired { .. }
    ));
    advance_time(&evm, 120).await;
    assert!(matches!(
        saw(revert_of(oracle.submitResult(late_key, submission(&late.epoch, &late.results))).await),
        OracleRevert::RequestExpired { .. }
    ));
    evm.refund(&late.request.id()).await.unwrap();
    assert_eq!(
        saw(revert_of(oracle.refund(late_key)).await),
        OracleRevert::AlreadyRefunded
    );
    // Withdrawals.
    assert!(matches!(
        saw(revert_of(
            chain
                .connect(7)
                .await
                .unwrap()
                .oracle()
                .withdraw(EvmAddress::ZERO)
        )
        .await),
        OracleRevert::NothingToWithdraw { .. }
    ));
    assert!(matches!(
        saw(revert_of(oracle.withdraw(*consumer.address())).await),
        OracleRevert::TransferFailed { .. }
    ));

    // Slashing: unknown nodes, evidence that proves nothing, a node slashed twice.
    let net = rakis_core::consensus::network_digest("attacks");
    let commit_of = |key: &NodeKey, commitment: u8| {
        let commit = rakis_core::consensus::Commit {
            request_id: id,
            node: key.node_id(),
            inference_id: rakis_core::InferenceId([1; 32]),
            commitment: rakis_core::consensus::Commitment([commitment; 32]),
        };
        SignedCommit {
            signature: sign_statement(key, &commit_statement(&net, &commit)),
            commit,
        }
    };
    let id_of = |key: &NodeKey| Bytes::from(key.node_id().0.to_vec());
    let stranger = node_key(90);
    assert!(matches!(
        saw(revert_of(oracle.slashEquivocation(
            id_of(&stranger),
            FixedBytes(net.0),
            signed_commit(&commit_of(&stranger, 1)),
            signed_commit(&commit_of(&stranger, 2)),
        ))
        .await),
        OracleRevert::UnknownNode { .. }
    ));
    let cheat = &keys[4];
    assert!(matches!(
        saw(revert_of(oracle.slashEquivocation(
            id_of(cheat),
            FixedBytes(net.0),
            signed_commit(&commit_of(cheat, 1)),
            signed_commit(&commit_of(cheat, 1)),
        ))
        .await),
        OracleRevert::InvalidEvidence { .. }
    ));
    let evidence = Misbehaviour::Equivocation {
        network: net,
        first: commit_of(cheat, 1),
        second: commit_of(cheat, 2),
    };
    assert!(evm.report_misbehaviour(&evidence).await.unwrap().is_some());
    assert!(matches!(
        saw(revert_of(oracle.slashEquivocation(
            id_of(cheat),
            FixedBytes(net.0),
            signed_commit(&commit_of(cheat, 1)),
            signed_commit(&commit_of(cheat, 2)),
        ))
        .await),
        OracleRevert::NothingToSlash { .. }
    ));
    // A second report of slashed evidence is no error: someone was first.
    assert_eq!(evm.report_misbehaviour(&evidence).await.unwrap(), None);

    // Every error the contract declares was reached.
    let abi: serde_json::Value =
        serde_json::from_str(rakis_chain::contracts::ORACLE_ARTIFACT).unwrap();
    let declared: BTreeSet<String> = abi["abi"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "error")
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(declared, reached, "declared vs reached");
}

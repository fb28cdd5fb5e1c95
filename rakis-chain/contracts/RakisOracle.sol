// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

/// @title Consumer side of the Rakis oracle
/// @notice A contract that asks the network for inference implements this to receive the
///         agreed output. The oracle calls it once, with exactly the gas the request named; a
///         reverting callback, or an address with no code, does not undo the result (it stays
///         readable with `RakisOracle.resultOf`).
interface IRakisConsumer {
    /// @param requestId the Rakis request id returned by `requestInference`
    /// @param output the agreed output text
    function rakisCallback(bytes32 requestId, string calldata output) external;
}

/// @title Rakis inference oracle with a staked registry
/// @notice Nodes stake to register; the member set is fixed per *epoch* (`advanceEpoch`, which
///         anyone may call); each request is served by a committee drawn from the epoch in force
///         when it was made, weighted by stake, exactly as `rakis-core` draws it. A result counts
///         only with the signatures of more than two thirds of that committee (and at least the
///         request's share), over a digest that binds this chain, this contract, the epoch and
///         the nodes to be paid. The submitter is reimbursed its gas from the payment, the rest
///         is shared among the paid nodes; every payout, refund and returned stake is credited and
///         pulled with `withdraw`.
/// @dev Digests follow the Rakis protocol specification (docs/protocol.md, "Chain requests" and
///      "The oracle"): SHA-256 over fixed-width big-endian fields, so that a node computes them
///      without an ABI encoder and the contract with `abi.encodePacked`. Node ids are 33-byte
///      compressed secp256k1 public keys, passed packed in `bytes`.
contract RakisOracle {
    /// @notice What the network is asked to do; mirrors the Rakis `InferenceRequest` and
    ///         `SecurityFrame` with integer fractions (milli for sampling, ppm for the frame).
    struct RequestParams {
        string prompt;
        string[] acceptedModels;
        uint32 maxTokens;
        uint32 temperatureMilli;
        uint32 topPMilli;
        uint32 quorum;
        uint64 maxTimeMs;
        uint32 secDistancePpm;
        uint32 secPercentagePpm;
        string embeddingModel;
    }

    /// @notice Stored state of one request.
    struct Request {
        address requester;
        address callback;
        uint32 callbackGas;
        uint32 quorum;
        uint32 sharePpm;
        uint32 maxOutputBytes;
        uint64 epoch;
        uint64 blockNumber;
        uint64 deadline;
        uint64 expiresAt;
        uint128 payment;
        bool fulfilled;
        bool refunded;
        bytes32 beacon;
        bytes32 outputHash;
    }

    /// @notice A registered node.
    struct Node {
        address staker;
        uint8 idPrefix;
        bytes32 idX;
        uint128 stake;
        uint64 unbondAt;
        uint64 nonce;
        bool active;
        bool banned;
    }

    /// @notice One epoch: the digest of its member set (as `rakis_core::Epoch::digest`), the
    ///         second from which it governs new requests, and the block whose `EpochStarted`
    ///         event lists its members.
    struct EpochInfo {
        bytes32 digest;
        uint64 startsAt;
        uint64 blockNumber;
    }

    /// @notice What a result submission carries besides the request id.
    struct Submission {
        /// the selected output text
        string output;
        /// hash of the accepted set the nodes agreed on
        bytes32 jointHash;
        /// node ids (33 bytes each, strictly ascending) of the accepted nodes to be paid
        bytes payees;
        /// node ids (33 bytes each, ascending) of the request's epoch, as `EpochStarted` listed them
        bytes members;
        /// their weights, as `EpochStarted` listed them
        uint64[] weights;
        /// 65-byte signatures (r ‖ s ‖ v) of committee members, by strictly ascending signer address
        bytes[] signatures;
    }

    /// @notice A committer's commit as it signed it (`rakis_core::misbehaviour::SignedCommit`):
    ///         the signature is EIP-191 over
    ///         `sha256("rakis/commit-statement/v1" ‖ 0x00 ‖ network ‖ requestId ‖ nodeId ‖ inferenceId ‖ commitment)`.
    struct SignedCommit {
        bytes32 requestId;
        bytes32 inferenceId;
        bytes32 commitment;
        /// 65 bytes, r ‖ s ‖ v
        bytes signature;
    }

    /// @notice A committer's reveal as it signed it (`rakis_core::misbehaviour::SignedReveal`;
    ///         the output stands as its SHA-256): EIP-191 over
    ///         `sha256("rakis/reveal-statement/v1" ‖ 0x00 ‖ network ‖ requestId ‖ nodeId ‖ inferenceId ‖ outputHash ‖ dim (u32) ‖ embedding ‖ salt)`.
    struct SignedReveal {
        bytes32 requestId;
        bytes32 inferenceId;
        bytes32 outputHash;
        uint32 dim;
        /// the binary embedding's canonical bytes
        bytes embedding;
        bytes32 salt;
        /// 65 bytes, r ‖ s ‖ v
        bytes signature;
    }

    // ---- limits, equal to rakis-core's request validation ----
    uint256 public constant MAX_PROMPT_BYTES = 64 * 1024;
    uint256 public constant MAX_ACCEPTED_MODELS = 16;
    uint256 public constant MAX_MODEL_NAME_BYTES = 256;
    /// @notice Outputs are stored: a chain request's output is at most this many bytes, so its
    ///         `maxTokens` is at most `MAX_OUTPUT_BYTES / OUTPUT_BYTES_PER_TOKEN` (rakis-core bounds
    ///         an output at 64 bytes per token).
    uint256 public constant MAX_OUTPUT_BYTES = 32 * 1024;
    uint256 public constant OUTPUT_BYTES_PER_TOKEN = 64;
    uint32 public constant MAX_CALLBACK_GAS = 2_000_000;
    uint64 public constant MAX_TIME_MS = 7 days * 1000;
    /// @notice Gas a request's payment must cover besides its callback and stored output.
    uint256 public constant SUBMIT_BASE_GAS = 400_000;
    /// @notice Gas per byte of output a request's payment must cover (storage and calldata).
    uint256 public constant OUTPUT_GAS_PER_BYTE = 700;
    /// @notice Gas not seen by `gasleft()` that a submitter is reimbursed (intrinsic and calldata).
    uint256 public constant SUBMIT_OVERHEAD_GAS = 60_000;
    /// @notice Highest priority fee per gas reimbursed: a submitter cannot drain a payment by
    ///         bidding a high gas price.
    uint256 public constant MAX_PRIORITY_FEE = 2 gwei;
    /// @notice Stake per unit of weight: a node's weight is its stake in gwei.
    uint256 public constant WEIGHT_UNIT = 1 gwei;

    string private constant REGISTER_TAG = "rakis/register/v2";
    string private constant EPOCH_TAG = "rakis/epoch/v1";
    string private constant COMMITTEE_TAG = "rakis/committee/v1";
    string private constant CONFIG_TAG = "rakis/config/v1";
    string private constant RESULT_TAG = "rakis/result/v2";
    string private constant COMMIT_TAG = "rakis/commit/v1";
    string private constant COMMIT_STATEMENT_TAG = "rakis/commit-statement/v1";
    string private constant REVEAL_STATEMENT_TAG = "rakis/reveal-statement/v1";

    /// @notice Share of a slashed stake credited to whoever proved the misbehaviour (percent);
    ///         the rest is burned (kept by the contract for ever), so that reporting oneself
    ///         always loses stake.
    uint256 public constant SLASH_REWARD_PERCENT = 10;
    /// @notice Kinds of misbehaviour in `NodeSlashed`.
    uint8 public constant SLASH_EQUIVOCATION = 1;
    uint8 public constant SLASH_FALSE_REVEAL = 2;

    /// @notice Deployer; may eject misbehaving nodes.
    address public immutable owner;
    /// @notice Lowest stake a node registers with (wei).
    uint256 public immutable minStake;
    /// @notice Seconds a leaving node's stake stays bonded (and slashable).
    uint64 public immutable unbondingPeriod;
    /// @notice Shortest time between two epochs (seconds).
    uint64 public immutable epochSpacing;
    /// @notice Seconds after a request's deadline during which its result may be submitted.
    uint64 public immutable submissionWindow;
    /// @notice Lowest payment accepted with a request (wei), besides its gas.
    uint256 public immutable minPayment;

    /// @notice Stake burned by slashing (wei), held by this contract for ever.
    uint256 public slashedTotal;
    /// @notice Number of requests made; the next request's nonce.
    uint64 public nextNonce;
    /// @notice Number of active nodes (the members of the next epoch).
    uint64 public activeCount;
    /// @dev The active nodes' addresses (unordered; `activeIndex` is position + 1).
    address[] private active;
    mapping(address => uint256) private activeIndex;
    /// @notice Registered nodes, by address.
    mapping(address => Node) private nodes;
    /// @notice The address of each node id (by keccak256 of its 33 bytes).
    mapping(bytes32 => address) public nodeById;
    /// @notice Balances withdrawable with `withdraw`: rewards, refunds, returned stake.
    mapping(address => uint256) public credits;
    EpochInfo[] private epochs;
    mapping(bytes32 => Request) private requests;
    mapping(bytes32 => string) private outputs;

    event NodeRegistered(address indexed node, address indexed staker, uint256 stake, bytes nodeId);
    event NodeExiting(address indexed node, uint64 unbondAt, bool ejected);
    event StakeReturned(address indexed node, address indexed staker, uint256 amount);
    event EpochStarted(uint64 indexed number, uint64 startsAt, bytes32 digest, bytes members, uint64[] weights);
    event InferenceRequested(
        bytes32 indexed requestId,
        address indexed requester,
        uint64 nonce,
        uint64 createdAtMs,
        address callback,
        uint256 payment,
        RequestParams params
    );
    event BeaconRecorded(bytes32 indexed requestId, bytes32 beacon);
    event ResultSubmitted(
        bytes32 indexed requestId,
        bytes32 outputHash,
        bytes32 jointHash,
        bytes payees,
        address submitter,
        uint256 reimbursed,
        bool callbackSucceeded
    );
    event Refunded(bytes32 indexed requestId, address indexed requester, uint256 amount);
    event Withdrawn(address indexed account, address to, uint256 amount);
    event NodeSlashed(
        address indexed node, address indexed reporter, bytes32 indexed requestId, uint8 kind, uint256 stake, uint256 reward
    );

    error NotOwner();
    error InvalidConfig(string reason);
    error InvalidRequest(string reason);
    error PaymentTooLow(uint256 paid, uint256 required);
    error InvalidRegistration(address node);
    error StakeTooLow(uint256 staked, uint256 required);
    error AlreadyRegistered(address node);
    error NodeBanned(address node);
    error NotStaker(address node, address caller);
    error NotActive(address node);
    error StakeLocked(address node, uint64 unbondAt);
    error EpochTooSoon(uint64 next);
    error InvalidMembers(string reason);
    error NoEpoch();
    error UnknownRequest(bytes32 requestId);
    error AlreadyFulfilled(bytes32 requestId);
    error TooEarly(bytes32 requestId, uint64 deadline);
    error RequestExpired(bytes32 requestId, uint64 expiredAt);
    error NotExpired(bytes32 requestId, uint64 expiresAt);
    error AlreadyRefunded(bytes32 requestId);
    error OutputTooLong(uint256 bytesLen, uint256 max);
    error EpochMismatch(uint64 epoch);
    error BeaconUnavailable(bytes32 requestId);
    error BadPayees(uint256 index);
    error SignersNotSorted(uint256 index);
    error InvalidSignature(uint256 index);
    error NotBonded(address node);
    error NotInCommittee(address node);
    error TooFewSignatures(uint256 provided, uint256 required);
    error InsufficientGas(uint256 left, uint256 needed);
    error NothingToWithdraw(address account);
    error TransferFailed(address to, uint256 amount);
    error UnknownNode(bytes nodeId);
    error NothingToSlash(address node);
    error InvalidEvidence(string reason);

    /// @param minStake_ lowest stake a node registers with (at least `WEIGHT_UNIT`)
    /// @param unbondingPeriod_ seconds a leaving node's stake stays bonded (longer than
    ///        `epochSpacing_` plus `submissionWindow_` plus the longest request)
    /// @param epochSpacing_ shortest time between epochs, seconds (at least 1)
    /// @param submissionWindow_ seconds after the deadline during which results are accepted
    /// @param minPayment_ lowest payment per request besides its gas, in wei
    constructor(
        uint256 minStake_,
        uint64 unbondingPeriod_,
        uint64 epochSpacing_,
        uint64 submissionWindow_,
        uint256 minPayment_
    ) {
        if (minStake_ < WEIGHT_UNIT || minStake_ / WEIGHT_UNIT > type(uint64).max) {
            revert InvalidConfig("stake below one weight unit or above 2^64 units");
        }
        if (epochSpacing_ == 0) revert InvalidConfig("epoch spacing must be at least 1 s");
        if (unbondingPeriod_ <= epochSpacing_ + submissionWindow_ + MAX_TIME_MS / 1000) {
            revert InvalidConfig("unbonding must outlast an epoch, a request and its window");
        }
        owner = msg.sender;
        minStake = minStake_;
        unbondingPeriod = unbondingPeriod_;
        epochSpacing = epochSpacing_;
        submissionWindow = submissionWindow_;
        minPayment = minPayment_;
    }

    // ---------------------------------------------------------------- registry

    /// @notice Registers the node whose uncompressed public key is `publicKey` (64 bytes, x ‖ y)
    ///         with the value sent as stake; the sender is its staker (who may make it leave and
    ///         gets the stake back). The node's key proves consent by signing (EIP-191)
    ///         `keccak256("rakis/register/v2" ‖ chainid (u64) ‖ this ‖ node ‖ staker ‖ nonce (u64))`,
    ///         where `nonce` counts the node's earlier registrations: an old signature never
    ///         registers the node again. It becomes a member at the next epoch.
    function register(bytes calldata publicKey, bytes calldata signature) external payable {
        if (publicKey.length != 64) revert InvalidRegistration(address(0));
        address node = address(uint160(uint256(keccak256(publicKey))));
        Node storage n = nodes[node];
        if (n.banned) revert NodeBanned(node);
        if (n.active || n.stake != 0) revert AlreadyRegistered(node);
        if (msg.value < minStake) revert StakeTooLow(msg.value, minStake);
        if (msg.value / WEIGHT_UNIT > type(uint64).max) revert InvalidRegistration(node);
        bytes32 digest =
            keccak256(abi.encodePacked(REGISTER_TAG, uint64(block.chainid), address(this), node, msg.sender, n.nonce));
        if (_recover(_ethSigned(digest), signature) != node) revert InvalidRegistration(node);
        uint8 prefix = (uint8(publicKey[63]) & 1) == 0 ? 2 : 3;
        bytes32 x = bytes32(publicKey[0:32]);
        n.staker = msg.sender;
        n.idPrefix = prefix;
        n.idX = x;
        n.stake = uint128(msg.value);
        n.unbondAt = 0;
        n.active = true;
        activeCount += 1;
        active.push(node);
        activeIndex[node] = active.length;
        nodeById[keccak256(abi.encodePacked(prefix, x))] = node;
        emit NodeRegistered(node, msg.sender, msg.value, abi.encodePacked(prefix, x));
    }

    /// @notice The staker takes `node` out of the next epochs; its stake stays bonded (and
    ///         slashable) for `unbondingPeriod`, then `withdrawStake` returns it.
    function exit(address node) external {
        Node storage n = nodes[node];
        if (n.staker != msg.sender) revert NotStaker(node, msg.sender);
        if (!n.active) revert NotActive(node);
        _deactivate(node, n);
        emit NodeExiting(node, n.unbondAt, false);
    }

    /// @notice Ejects a misbehaving node for good (owner only): its signatures stop counting at
    ///         once, it leaves the next epoch, and it can never register again. Its stake is
    ///         returned to the staker after the unbonding period.
    function eject(address node) external {
        if (msg.sender != owner) revert NotOwner();
        Node storage n = nodes[node];
        if (n.stake == 0 && !n.active) revert NotActive(node);
        n.banned = true;
        if (n.active) _deactivate(node, n);
        emit NodeExiting(node, n.unbondAt, true);
    }

    function _deactivate(address node, Node storage n) private {
        n.active = false;
        n.unbondAt = uint64(block.timestamp) + unbondingPeriod;
        n.nonce += 1;
        activeCount -= 1;
        uint256 position = activeIndex[node] - 1;
        address last = active[active.length - 1];
        active[position] = last;
        activeIndex[last] = position + 1;
        active.pop();
        delete activeIndex[node];
    }

    /// @notice Credits a left node's stake to its staker once the unbonding period is over.
    function withdrawStake(address node) external {
        Node storage n = nodes[node];
        if (n.staker != msg.sender) revert NotStaker(node, msg.sender);
        if (n.active || n.stake == 0) revert NotActive(node);
        if (block.timestamp < n.unbondAt) revert StakeLocked(node, n.unbondAt);
        uint256 amount = n.stake;
        n.stake = 0;
        credits[msg.sender] += amount;
        emit StakeReturned(node, msg.sender, amount);
    }

    /// @notice The node ids (33 bytes each, packed, unordered) of the active nodes: sorted, the
    ///         list `advanceEpoch` takes.
    function activeNodeIds() external view returns (bytes memory ids) {
        ids = new bytes(active.length * 33);
        for (uint256 i = 0; i < active.length; i++) {
            Node storage n = nodes[active[i]];
            uint8 prefix = n.idPrefix;
            bytes32 x = n.idX;
            assembly {
                let p := add(add(ids, 32), mul(i, 33))
                mstore8(p, prefix)
                mstore(add(p, 1), x)
            }
        }
    }

    /// @notice A registered node's record (staker zero: never registered).
    function nodeOf(address node) external view returns (Node memory) {
        return nodes[node];
    }

    // ---------------------------------------------------------------- epochs

    /// @notice Starts the next epoch with the active nodes, listed by the caller as their node
    ///         ids (33 bytes each) in strictly ascending order; the list must be complete. It
    ///         governs requests from the next second on. Anyone may call it, at most once per
    ///         `epochSpacing`.
    function advanceEpoch(bytes calldata members) external {
        uint256 count = epochs.length;
        if (count > 0) {
            uint64 next = epochs[count - 1].startsAt + epochSpacing;
            if (block.timestamp < next) revert EpochTooSoon(next);
        }
        if (members.length == 0 || members.length % 33 != 0) revert InvalidMembers("not a list of node ids");
        uint256 n = members.length / 33;
        if (n != activeCount) revert InvalidMembers("not every active node");
        uint64[] memory weights = new uint64[](n);
        for (uint256 i = 0; i < n; i++) {
            if (i > 0 && !_idLess(members, i - 1, members, i)) revert InvalidMembers("not strictly ascending");
            Node storage node = nodes[nodeById[keccak256(members[i * 33:i * 33 + 33])]];
            if (!node.active) revert InvalidMembers("an inactive node");
            weights[i] = uint64(node.stake / WEIGHT_UNIT);
        }
        uint64 number = uint64(count);
        bytes32 digest = _epochDigest(number, members, weights);
        uint64 startsAt = uint64(block.timestamp) + 1;
        epochs.push(EpochInfo({digest: digest, startsAt: startsAt, blockNumber: uint64(block.number)}));
        emit EpochStarted(number, startsAt, digest, members, weights);
    }

    /// @notice Number of epochs started.
    function epochCount() external view returns (uint256) {
        return epochs.length;
    }

    /// @notice Epoch `number`.
    function epochOf(uint64 number) external view returns (EpochInfo memory) {
        return epochs[number];
    }

    /// @notice The epoch governing requests made now.
    function currentEpoch() public view returns (uint64) {
        uint256 count = epochs.length;
        if (count > 0 && epochs[count - 1].startsAt <= block.timestamp) return uint64(count - 1);
        if (count > 1) return uint64(count - 2);
        revert NoEpoch();
    }

    // ---------------------------------------------------------------- requests

    /// @notice Asks the network for inference. The payment must cover `minPayment` and the gas
    ///         of submitting the result at today's base fee (`requiredPayment`); the submitter is
    ///         reimbursed from it, the rest is shared among the paid nodes, or all of it is
    ///         credited back when the request expires unfulfilled.
    /// @param params what to run and the security frame
    /// @param callback contract called with the output (`address(0)`: none)
    /// @param callbackGas gas given to the callback (at most `MAX_CALLBACK_GAS`)
    /// @return requestId the Rakis request id
    function requestInference(RequestParams calldata params, address callback, uint32 callbackGas)
        external
        payable
        returns (bytes32 requestId)
    {
        _validate(params);
        if (callbackGas > MAX_CALLBACK_GAS) revert InvalidRequest("callback gas above limit");
        uint256 maxOutput = uint256(params.maxTokens) * OUTPUT_BYTES_PER_TOKEN;
        if (maxOutput > MAX_OUTPUT_BYTES) maxOutput = MAX_OUTPUT_BYTES;
        uint256 required = requiredPayment(uint32(maxOutput), callbackGas);
        if (msg.value < required) revert PaymentTooLow(msg.value, required);
        uint64 epoch = currentEpoch();
        uint64 nonce = nextNonce++;
        uint64 createdAtMs = uint64(block.timestamp) * 1000;
        requestId = sha256(
            abi.encodePacked(
                "rakis/chain-request/v1",
                bytes1(0),
                uint64(block.chainid),
                address(this),
                nonce,
                createdAtMs,
                paramsDigest(params)
            )
        );
        uint64 deadline = uint64(block.timestamp) + params.maxTimeMs / 1000;
        requests[requestId] = Request({
            requester: msg.sender,
            callback: callback,
            callbackGas: callbackGas,
            quorum: params.quorum,
            sharePpm: params.secPercentagePpm,
            maxOutputBytes: uint32(maxOutput),
            epoch: epoch,
            blockNumber: uint64(block.number),
            deadline: deadline,
            expiresAt: deadline + 1 + submissionWindow,
            payment: uint128(msg.value),
            fulfilled: false,
            refunded: false,
            beacon: bytes32(0),
            outputHash: bytes32(0)
        });
        emit InferenceRequested(requestId, msg.sender, nonce, createdAtMs, callback, msg.value, params);
    }

    /// @notice The lowest payment for a request with outputs up to `maxOutputBytes` and a
    ///         callback of `callbackGas`, at this block's base fee.
    function requiredPayment(uint32 maxOutputBytes, uint32 callbackGas) public view returns (uint256) {
        uint256 gas = SUBMIT_BASE_GAS + uint256(callbackGas) + OUTPUT_GAS_PER_BYTE * maxOutputBytes;
        return minPayment + gas * block.basefee;
    }

    /// @notice Digest of the request parameters (see docs/protocol.md, "Chain requests").
    function paramsDigest(RequestParams calldata p) public pure returns (bytes32) {
        bytes memory models;
        for (uint256 i = 0; i < p.acceptedModels.length; i++) {
            models = abi.encodePacked(models, sha256(bytes(p.acceptedModels[i])));
        }
        bytes memory head = abi.encodePacked(
            sha256(bytes(p.prompt)), sha256(models), p.maxTokens, p.temperatureMilli, p.topPMilli
        );
        return sha256(
            abi.encodePacked(
                head, p.quorum, p.maxTimeMs, p.secDistancePpm, p.secPercentagePpm, sha256(bytes(p.embeddingModel))
            )
        );
    }

    function _validate(RequestParams calldata p) private pure {
        uint256 promptBytes = bytes(p.prompt).length;
        if (promptBytes == 0) revert InvalidRequest("empty prompt");
        if (promptBytes > MAX_PROMPT_BYTES) revert InvalidRequest("prompt too long");
        if (p.acceptedModels.length == 0 || p.acceptedModels.length > MAX_ACCEPTED_MODELS) {
            revert InvalidRequest("accepted models must list 1 to 16 models");
        }
        for (uint256 i = 0; i < p.acceptedModels.length; i++) {
            uint256 n = bytes(p.acceptedModels[i]).length;
            if (n == 0 || n > MAX_MODEL_NAME_BYTES) revert InvalidRequest("bad model name");
        }
        if (p.maxTokens == 0 || uint256(p.maxTokens) * OUTPUT_BYTES_PER_TOKEN > MAX_OUTPUT_BYTES) {
            revert InvalidRequest("max tokens out of range");
        }
        if (p.temperatureMilli > 2000) revert InvalidRequest("temperature above 2");
        if (p.topPMilli == 0 || p.topPMilli > 1000) revert InvalidRequest("top-p out of range");
        if (p.quorum == 0 || p.quorum > 64) revert InvalidRequest("quorum out of range");
        if (p.maxTimeMs == 0 || p.maxTimeMs > MAX_TIME_MS) revert InvalidRequest("max time out of range");
        if (p.secDistancePpm > 1_000_000) revert InvalidRequest("distance above 1");
        if (p.secPercentagePpm == 0 || p.secPercentagePpm > 1_000_000) revert InvalidRequest("share out of range");
        uint256 e = bytes(p.embeddingModel).length;
        if (e == 0 || e > MAX_MODEL_NAME_BYTES) revert InvalidRequest("bad embedding model name");
    }

    /// @notice Stores the committee beacon of a request (the hash of the block that holds it)
    ///         while the chain still returns it (256 blocks); anyone may call it. Submissions
    ///         read the hash themselves when they come within that span.
    function recordBeacon(bytes32 requestId) external {
        Request storage r = requests[requestId];
        if (r.requester == address(0)) revert UnknownRequest(requestId);
        if (r.beacon == bytes32(0)) {
            bytes32 h = blockhash(r.blockNumber);
            if (h == bytes32(0)) revert BeaconUnavailable(requestId);
            r.beacon = h;
            emit BeaconRecorded(requestId, h);
        }
    }

    // ---------------------------------------------------------------- results

    /// @notice Submits the agreed result of a request made through this contract. Every signer
    ///         must be a bonded member of the request's committee and sign, with EIP-191,
    ///         `sha256("rakis/result/v2" ‖ 0x00 ‖ requestId ‖ sha256(output) ‖ jointHash ‖
    ///         sha256(payees) ‖ configDigest(epoch))`; more than two thirds of the committee (and
    ///         at least its share of it) must sign. The sender is reimbursed its gas (at most
    ///         base fee + `MAX_PRIORITY_FEE` per gas), the payees share the rest, and the consumer
    ///         is called back. Results of requests made elsewhere are refused. Estimate gas with
    ///         the transaction's fee set, or add 25,000: under a zero gas price no reimbursement
    ///         is credited, and the first credit of an account writes a fresh storage slot.
    function submitResult(bytes32 requestId, Submission calldata s) external {
        uint256 gasStart = gasleft();
        Request storage r = requests[requestId];
        if (r.requester == address(0)) revert UnknownRequest(requestId);
        if (r.fulfilled) revert AlreadyFulfilled(requestId);
        if (r.refunded) revert AlreadyRefunded(requestId);
        if (block.timestamp < r.deadline) revert TooEarly(requestId, r.deadline);
        if (block.timestamp > r.expiresAt) revert RequestExpired(requestId, r.expiresAt);
        if (bytes(s.output).length > r.maxOutputBytes) revert OutputTooLong(bytes(s.output).length, r.maxOutputBytes);

        uint256[] memory committee = _committeeOf(requestId, r, s.members, s.weights);
        bytes32 epochDigest = epochs[r.epoch].digest;
        _checkPayees(s.payees, s.members, committee);
        bytes32 outputHash = sha256(bytes(s.output));
        bytes32 digest = _ethSigned(
            sha256(
                abi.encodePacked(
                    RESULT_TAG,
                    bytes1(0),
                    requestId,
                    outputHash,
                    s.jointHash,
                    sha256(s.payees),
                    configDigest(epochDigest)
                )
            )
        );
        uint256 signed = _countSigners(digest, s.signatures, s.members, committee);
        uint256 n = committee.length;
        uint256 required = 2 * n / 3 + 1;
        uint256 byShare = (uint256(r.sharePpm) * n + 999_999) / 1_000_000;
        if (byShare > required) required = byShare;
        if (signed < required) revert TooFewSignatures(signed, required);

        r.fulfilled = true;
        r.outputHash = outputHash;
        outputs[requestId] = s.output;

        bool ok = _callBack(r, requestId, s.output);
        uint256 price = tx.gasprice;
        if (price > block.basefee + MAX_PRIORITY_FEE) price = block.basefee + MAX_PRIORITY_FEE;
        uint256 reimbursed = (gasStart - gasleft() + SUBMIT_OVERHEAD_GAS) * price;
        if (reimbursed > r.payment) reimbursed = r.payment;
        credits[msg.sender] += reimbursed;
        _pay(s.payees, r.payment - reimbursed);
        emit ResultSubmitted(requestId, outputHash, s.jointHash, s.payees, msg.sender, reimbursed, ok);
    }

    /// @notice The digest that binds signatures to this chain, this contract and one epoch:
    ///         `sha256("rakis/config/v1" ‖ 0x00 ‖ chainid (u64) ‖ this ‖ epochDigest)`.
    function configDigest(bytes32 epochDigest) public view returns (bytes32) {
        return sha256(abi.encodePacked(CONFIG_TAG, bytes1(0), uint64(block.chainid), address(this), epochDigest));
    }

    /// @notice The committee of a request (node ids packed, in draw order), given its epoch's
    ///         member list as `EpochStarted` logged it.
    function committeeOf(bytes32 requestId, bytes calldata members, uint64[] calldata weights)
        external
        view
        returns (bytes memory ids)
    {
        Request storage r = requests[requestId];
        if (r.requester == address(0)) revert UnknownRequest(requestId);
        uint256[] memory c = _committeeOf(requestId, r, members, weights);
        for (uint256 i = 0; i < c.length; i++) {
            ids = bytes.concat(ids, members[c[i] * 33:c[i] * 33 + 33]);
        }
    }

    /// @dev Checks the member list against the request's epoch and draws the committee as
    ///      `rakis_core::Epoch::committee` does; returns indices into `members`.
    function _committeeOf(bytes32 requestId, Request storage r, bytes calldata members, uint64[] calldata weights)
        private
        view
        returns (uint256[] memory drawn)
    {
        bytes32 epochDigest = epochs[r.epoch].digest;
        if (members.length % 33 != 0 || members.length / 33 != weights.length) revert EpochMismatch(r.epoch);
        if (_epochDigest(r.epoch, members, weights) != epochDigest) revert EpochMismatch(r.epoch);
        bytes32 beacon = r.beacon;
        if (beacon == bytes32(0)) {
            beacon = blockhash(r.blockNumber);
            if (beacon == bytes32(0)) revert BeaconUnavailable(requestId);
        }
        uint256 n = weights.length;
        uint256 q = r.quorum;
        uint256 spares = (2 * q + 4) / 5;
        if (spares == 0) spares = 1;
        uint256 size = q + spares;
        if (size > n) size = n;
        bytes32 seed = sha256(abi.encodePacked(COMMITTEE_TAG, bytes1(0), epochDigest, requestId, beacon));
        uint256 remaining = 0;
        for (uint256 i = 0; i < n; i++) {
            remaining += weights[i];
        }
        bool[] memory taken = new bool[](n);
        drawn = new uint256[](size);
        for (uint256 k = 0; k < size; k++) {
            uint256 target = uint256(uint128(bytes16(sha256(abi.encodePacked(seed, uint32(k)))))) % remaining;
            uint256 acc = 0;
            for (uint256 i = 0; i < n; i++) {
                if (taken[i]) continue;
                acc += weights[i];
                if (acc > target) {
                    taken[i] = true;
                    drawn[k] = i;
                    remaining -= weights[i];
                    break;
                }
            }
        }
    }

    /// @dev Payees: node ids, strictly ascending, each a member of the committee.
    function _checkPayees(bytes calldata payees, bytes calldata members, uint256[] memory committee) private pure {
        if (payees.length == 0 || payees.length % 33 != 0) revert BadPayees(0);
        uint256 n = payees.length / 33;
        for (uint256 i = 0; i < n; i++) {
            if (i > 0 && !_idLess(payees, i - 1, payees, i)) revert BadPayees(i);
            bool found = false;
            for (uint256 j = 0; j < committee.length; j++) {
                if (_idEq(payees, i, members, committee[j])) {
                    found = true;
                    break;
                }
            }
            if (!found) revert BadPayees(i);
        }
    }

    /// @dev Counts the signatures of distinct, bonded committee members over `digest`.
    function _countSigners(
        bytes32 digest,
        bytes[] calldata signatures,
        bytes calldata members,
        uint256[] memory committee
    ) private view returns (uint256) {
        address previous = address(0);
        for (uint256 i = 0; i < signatures.length; i++) {
            address signer = _recover(digest, signatures[i]);
            if (signer == address(0)) revert InvalidSignature(i);
            if (signer <= previous) revert SignersNotSorted(i);
            previous = signer;
            Node storage node = nodes[signer];
            if (node.stake == 0 || node.banned) revert NotBonded(signer);
            bytes memory id = abi.encodePacked(node.idPrefix, node.idX);
            bool inCommittee = false;
            for (uint256 j = 0; j < committee.length; j++) {
                if (keccak256(id) == keccak256(members[committee[j] * 33:committee[j] * 33 + 33])) {
                    inCommittee = true;
                    break;
                }
            }
            if (!inCommittee) revert NotInCommittee(signer);
        }
        return signatures.length;
    }

    /// @dev Calls the consumer with exactly its gas; an address with no code is not called.
    function _callBack(Request storage r, bytes32 requestId, string calldata output) private returns (bool ok) {
        address target = r.callback;
        if (target == address(0) || target.code.length == 0) return false;
        uint256 gasForCall = r.callbackGas;
        // EIP-150 passes at most 63/64 of what is left: make sure the callback gets all of its
        // gas, so that a submitter cannot starve it on purpose.
        uint256 needed = gasForCall + gasForCall / 63 + 10_000;
        if (gasleft() < needed) revert InsufficientGas(gasleft(), needed);
        bytes memory data = abi.encodeCall(IRakisConsumer.rakisCallback, (requestId, output));
        assembly {
            // No return data is copied: a callback cannot make the oracle pay for a large one.
            ok := call(gasForCall, target, 0, add(data, 32), mload(data), 0, 0)
        }
    }

    /// @dev Credits `amount` to the payees' addresses in equal shares (dust to the first).
    function _pay(bytes calldata payees, uint256 amount) private {
        uint256 n = payees.length / 33;
        uint256 share = amount / n;
        for (uint256 i = 0; i < n; i++) {
            address a = nodeById[keccak256(payees[i * 33:i * 33 + 33])];
            uint256 value = i == 0 ? amount - share * (n - 1) : share;
            credits[a] += value;
        }
    }

    /// @notice Credits the payment of an expired, unfulfilled request back to its requester
    ///         (pulled with `withdraw`; anyone may call this).
    function refund(bytes32 requestId) external {
        Request storage r = requests[requestId];
        if (r.requester == address(0)) revert UnknownRequest(requestId);
        if (r.fulfilled) revert AlreadyFulfilled(requestId);
        if (r.refunded) revert AlreadyRefunded(requestId);
        if (block.timestamp <= r.expiresAt) revert NotExpired(requestId, r.expiresAt);
        r.refunded = true;
        uint256 amount = r.payment;
        credits[r.requester] += amount;
        emit Refunded(requestId, r.requester, amount);
    }

    /// @notice Sends the caller's credits (rewards, refunds, returned stake) to `to`.
    function withdraw(address payable to) external {
        uint256 amount = credits[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        credits[msg.sender] = 0;
        (bool sent,) = to.call{value: amount}("");
        if (!sent) revert TransferFailed(to, amount);
        emit Withdrawn(msg.sender, to, amount);
    }

    // ---------------------------------------------------------------- slashing

    /// @notice Slashes the node `nodeId` (33 bytes) that signed two different commits for one
    ///         request in one network (`network`: `sha256("rakis/network/v1" ‖ 0x00 ‖ network id)`).
    ///         Anyone may send the evidence; the node loses its whole stake, is banned and leaves
    ///         the next epoch; the sender is credited `SLASH_REWARD_PERCENT` of the stake.
    function slashEquivocation(bytes calldata nodeId, bytes32 network, SignedCommit calldata a, SignedCommit calldata b)
        external
    {
        address node = _accused(nodeId);
        if (a.requestId != b.requestId) revert InvalidEvidence("the statements are of two requests");
        if (a.commitment == b.commitment && a.inferenceId == b.inferenceId) {
            revert InvalidEvidence("the commits agree");
        }
        if (_recover(_ethSigned(_commitStatement(network, nodeId, a)), a.signature) != node) revert InvalidSignature(0);
        if (_recover(_ethSigned(_commitStatement(network, nodeId, b)), b.signature) != node) revert InvalidSignature(1);
        _slash(node, a.requestId, SLASH_EQUIVOCATION);
    }

    /// @notice Slashes the node `nodeId` that signed a reveal which does not open its signed
    ///         commitment (same request and network), as `slashEquivocation`.
    function slashFalseReveal(bytes calldata nodeId, bytes32 network, SignedCommit calldata c, SignedReveal calldata r)
        external
    {
        address node = _accused(nodeId);
        if (c.requestId != r.requestId) revert InvalidEvidence("the statements are of two requests");
        bytes32 opened = sha256(
            abi.encodePacked(
                COMMIT_TAG,
                bytes1(0),
                r.requestId,
                nodeId,
                r.inferenceId,
                r.outputHash,
                r.dim,
                r.embedding,
                r.salt
            )
        );
        if (opened == c.commitment) revert InvalidEvidence("the reveal opens the commitment");
        if (_recover(_ethSigned(_commitStatement(network, nodeId, c)), c.signature) != node) revert InvalidSignature(0);
        bytes32 revealStatement = sha256(
            abi.encodePacked(
                REVEAL_STATEMENT_TAG,
                bytes1(0),
                network,
                r.requestId,
                nodeId,
                r.inferenceId,
                r.outputHash,
                r.dim,
                r.embedding,
                r.salt
            )
        );
        if (_recover(_ethSigned(revealStatement), r.signature) != node) revert InvalidSignature(1);
        _slash(node, c.requestId, SLASH_FALSE_REVEAL);
    }

    /// @dev The registered address of `nodeId`, which must still have stake.
    function _accused(bytes calldata nodeId) private view returns (address node) {
        if (nodeId.length != 33) revert UnknownNode(nodeId);
        node = nodeById[keccak256(nodeId)];
        if (node == address(0)) revert UnknownNode(nodeId);
        if (nodes[node].stake == 0) revert NothingToSlash(node);
    }

    function _commitStatement(bytes32 network, bytes calldata nodeId, SignedCommit calldata c)
        private
        pure
        returns (bytes32)
    {
        return sha256(
            abi.encodePacked(
                COMMIT_STATEMENT_TAG, bytes1(0), network, c.requestId, nodeId, c.inferenceId, c.commitment
            )
        );
    }

    /// @dev Takes the whole stake, bans the node (its signatures stop counting at once) and
    ///      takes it out of the next epochs; credits the reporter its share, burns the rest.
    function _slash(address node, bytes32 requestId, uint8 kind) private {
        Node storage n = nodes[node];
        uint256 amount = n.stake;
        n.stake = 0;
        n.banned = true;
        if (n.active) _deactivate(node, n);
        uint256 reward = amount * SLASH_REWARD_PERCENT / 100;
        credits[msg.sender] += reward;
        slashedTotal += amount - reward;
        emit NodeSlashed(node, msg.sender, requestId, kind, amount, reward);
    }

    // ---------------------------------------------------------------- views

    /// @notice The stored state of a request (requester zero: unknown).
    function requestOf(bytes32 requestId) external view returns (Request memory) {
        return requests[requestId];
    }

    /// @notice Whether the result of `requestId` is stored.
    function isFulfilled(bytes32 requestId) external view returns (bool) {
        return requests[requestId].fulfilled;
    }

    /// @notice The stored output of a fulfilled request (empty otherwise).
    function resultOf(bytes32 requestId) external view returns (string memory) {
        return outputs[requestId];
    }

    // ---------------------------------------------------------------- helpers

    /// @dev `sha256("rakis/epoch/v1" ‖ 0x00 ‖ number ‖ n ‖ (id ‖ weight)…)`, as rakis-core.
    function _epochDigest(uint64 number, bytes calldata members, uint64[] memory weights)
        private
        pure
        returns (bytes32)
    {
        uint256 n = weights.length;
        bytes memory buf = new bytes(n * 41);
        for (uint256 i = 0; i < n; i++) {
            bytes32 x = bytes32(members[i * 33 + 1:i * 33 + 33]);
            uint8 prefix = uint8(members[i * 33]);
            uint64 w = weights[i];
            assembly {
                let p := add(add(buf, 32), mul(i, 41))
                mstore8(p, prefix)
                mstore(add(p, 1), x)
                // The 8 weight bytes, then 24 bytes that the next member (or nothing) overwrites:
                // `new bytes` leaves the free memory pointer past the buffer, rounded up to 32.
                mstore(add(p, 33), shl(192, w))
            }
        }
        // The last weight's store may run up to 24 bytes past the buffer: move the free memory
        // pointer past it so nothing allocated later is mistaken for zeroed memory.
        assembly {
            mstore(0x40, add(mload(0x40), 32))
        }
        return sha256(abi.encodePacked(EPOCH_TAG, bytes1(0), number, uint64(n), buf));
    }

    /// @dev Whether id `i` of `a` sorts strictly before id `j` of `b` (33-byte ids).
    function _idLess(bytes calldata a, uint256 i, bytes calldata b, uint256 j) private pure returns (bool) {
        uint8 pa = uint8(a[i * 33]);
        uint8 pb = uint8(b[j * 33]);
        if (pa != pb) return pa < pb;
        return uint256(bytes32(a[i * 33 + 1:i * 33 + 33])) < uint256(bytes32(b[j * 33 + 1:j * 33 + 33]));
    }

    function _idEq(bytes calldata a, uint256 i, bytes calldata b, uint256 j) private pure returns (bool) {
        return keccak256(a[i * 33:i * 33 + 33]) == keccak256(b[j * 33:j * 33 + 33]);
    }

    function _ethSigned(bytes32 digest) private pure returns (bytes32) {
        return keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", digest));
    }

    /// @dev ecrecover of a 65-byte r ‖ s ‖ v signature; address(0) for a malformed or
    ///      high-s (malleable) signature.
    function _recover(bytes32 digest, bytes calldata sig) private pure returns (address) {
        if (sig.length != 65) return address(0);
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (v < 27) v += 27;
        if (v != 27 && v != 28) return address(0);
        if (uint256(s) > 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0) return address(0);
        return ecrecover(digest, v, r, s);
    }
}

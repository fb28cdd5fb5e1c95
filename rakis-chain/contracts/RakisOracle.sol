// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

/// @title Consumer side of the Rakis oracle
/// @notice A contract that asks the network for inference implements this to receive the
///         agreed output. The oracle calls it once, with bounded gas; a reverting callback
///         does not undo the result (it stays readable with `RakisOracle.resultOf`).
interface IRakisConsumer {
    /// @param requestId the Rakis request id returned by `requestInference`
    /// @param output the agreed output text
    function rakisCallback(bytes32 requestId, string calldata output) external;
}

/// @title Rakis inference oracle
/// @notice Contracts request inference; registered Rakis nodes answer with a result signed by
///         at least the required number of them. The result is stored once, the payment is
///         shared among the attesting accepted nodes (withdrawable), and the consumer is called
///         back. Unfulfilled requests are refunded after they expire.
/// @dev Digests follow the Rakis protocol specification (docs/protocol.md, "Chain requests"):
///      the request id and the result digest are SHA-256 over fixed-width big-endian fields, so
///      a node computes them without an ABI encoder and the contract with `abi.encodePacked`.
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
        uint32 minSignatures;
        uint64 expiresAt;
        uint128 payment;
        bool fulfilled;
        bool refunded;
        bytes32 outputHash;
    }

    // ---- limits, equal to rakis-core's request validation ----
    uint256 public constant MAX_PROMPT_BYTES = 32 * 1024;
    uint256 public constant MAX_ACCEPTED_MODELS = 8;
    uint32 public constant MAX_TOKENS_LIMIT = 8192;
    uint32 public constant MAX_CALLBACK_GAS = 2_000_000;
    uint256 public constant MAX_MODEL_NAME_BYTES = 256;

    /// @notice Deployer; may remove misbehaving nodes and change the signature floor.
    address public owner;
    /// @notice Lowest number of node signatures any result needs, whatever its frame says.
    uint32 public minSignaturesFloor;
    /// @notice Seconds after a request's deadline during which its result may be submitted.
    uint64 public submissionWindow;
    /// @notice Lowest payment accepted with a request (wei).
    uint256 public minPayment;
    /// @notice Number of requests made; the next request's nonce.
    uint64 public nextNonce;

    /// @notice Registered Rakis nodes (addresses of their node keys).
    mapping(address => bool) public registered;
    /// @notice Rewards owed to nodes, withdrawable with `withdraw`.
    mapping(address => uint256) public rewards;
    mapping(bytes32 => Request) private requests;
    mapping(bytes32 => string) private outputs;

    event NodeRegistered(address indexed node);
    event NodeRemoved(address indexed node);
    event InferenceRequested(
        bytes32 indexed requestId,
        address indexed requester,
        uint64 nonce,
        uint64 createdAtMs,
        address callback,
        uint256 payment,
        RequestParams params
    );
    event ResultSubmitted(
        bytes32 indexed requestId,
        bytes32 outputHash,
        bytes32 jointHash,
        address[] acceptedNodes,
        bool foreign,
        bool callbackSucceeded
    );
    event Refunded(bytes32 indexed requestId, address indexed requester, uint256 amount);
    event Withdrawn(address indexed node, address to, uint256 amount);

    error NotOwner();
    error InvalidRequest(string reason);
    error PaymentTooLow(uint256 paid, uint256 required);
    error InvalidRegistration(address node);
    error UnknownRequest(bytes32 requestId);
    error AlreadyFulfilled(bytes32 requestId);
    error RequestExpired(bytes32 requestId, uint64 expiredAt);
    error NotExpired(bytes32 requestId, uint64 expiresAt);
    error AlreadyRefunded(bytes32 requestId);
    error LengthMismatch(uint256 nodes, uint256 signatures);
    error SignersNotSorted(uint256 index);
    error InvalidSignature(uint256 index, address expected);
    error NodeNotRegistered(address node);
    error TooFewSignatures(uint256 provided, uint256 required);
    error InsufficientGas(uint256 left, uint256 needed);
    error NothingToWithdraw(address node);
    error TransferFailed(address to, uint256 amount);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    /// @param minSignaturesFloor_ lowest number of signatures any result needs (at least 1)
    /// @param submissionWindow_ seconds after the deadline during which results are accepted
    /// @param minPayment_ lowest payment per request, in wei
    constructor(uint32 minSignaturesFloor_, uint64 submissionWindow_, uint256 minPayment_) {
        owner = msg.sender;
        minSignaturesFloor = minSignaturesFloor_ == 0 ? 1 : minSignaturesFloor_;
        submissionWindow = submissionWindow_;
        minPayment = minPayment_;
    }

    // ---------------------------------------------------------------- nodes

    /// @notice Registers `node`, proven by its signature (EIP-191 over
    ///         `keccak256("rakis/register/v1" ‖ chainid (u64) ‖ this contract ‖ node)`). Anyone
    ///         may send the transaction; only the key's owner can produce the signature.
    function registerNode(address node, bytes calldata signature) external {
        bytes32 digest = keccak256(abi.encodePacked("rakis/register/v1", uint64(block.chainid), address(this), node));
        if (node == address(0) || _recover(_ethSigned(digest), signature) != node) {
            revert InvalidRegistration(node);
        }
        if (!registered[node]) {
            registered[node] = true;
            emit NodeRegistered(node);
        }
    }

    /// @notice Removes a node (owner only); its results no longer count.
    function removeNode(address node) external onlyOwner {
        if (registered[node]) {
            registered[node] = false;
            emit NodeRemoved(node);
        }
    }

    /// @notice Changes the signature floor (owner only; at least 1).
    function setMinSignaturesFloor(uint32 floor) external onlyOwner {
        minSignaturesFloor = floor == 0 ? 1 : floor;
    }

    // ---------------------------------------------------------------- requests

    /// @notice Asks the network for inference. The payment is shared among the nodes whose
    ///         answers were accepted, or refunded when the request expires unfulfilled.
    /// @param params what to run and the security frame
    /// @param callback contract called with the output (`address(0)`: none)
    /// @param callbackGas gas given to the callback (at most `MAX_CALLBACK_GAS`)
    /// @return requestId the Rakis request id
    function requestInference(RequestParams calldata params, address callback, uint32 callbackGas)
        external
        payable
        returns (bytes32 requestId)
    {
        if (msg.value < minPayment) revert PaymentTooLow(msg.value, minPayment);
        _validate(params);
        if (callbackGas > MAX_CALLBACK_GAS) revert InvalidRequest("callback gas above limit");
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
        uint64 deadline = uint64(block.timestamp) + (params.maxTimeMs + 999) / 1000;
        uint256 required = (uint256(params.secPercentagePpm) * params.quorum + 999_999) / 1_000_000;
        if (required < minSignaturesFloor) required = minSignaturesFloor;
        requests[requestId] = Request({
            requester: msg.sender,
            callback: callback,
            callbackGas: callbackGas,
            minSignatures: uint32(required),
            expiresAt: deadline + submissionWindow,
            payment: uint128(msg.value),
            fulfilled: false,
            refunded: false,
            outputHash: bytes32(0)
        });
        emit InferenceRequested(requestId, msg.sender, nonce, createdAtMs, callback, msg.value, params);
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
            revert InvalidRequest("accepted models must list 1 to 8 models");
        }
        for (uint256 i = 0; i < p.acceptedModels.length; i++) {
            uint256 n = bytes(p.acceptedModels[i]).length;
            if (n == 0 || n > MAX_MODEL_NAME_BYTES) revert InvalidRequest("bad model name");
        }
        if (p.maxTokens == 0 || p.maxTokens > MAX_TOKENS_LIMIT) revert InvalidRequest("max tokens out of range");
        if (p.temperatureMilli > 2000) revert InvalidRequest("temperature above 2");
        if (p.topPMilli == 0 || p.topPMilli > 1000) revert InvalidRequest("top-p out of range");
        if (p.quorum == 0) revert InvalidRequest("quorum must be at least 1");
        if (p.maxTimeMs == 0 || p.maxTimeMs > 7 days * 1000) revert InvalidRequest("max time out of range");
        if (p.secDistancePpm > 1_000_000) revert InvalidRequest("distance above 1");
        if (p.secPercentagePpm == 0 || p.secPercentagePpm > 1_000_000) revert InvalidRequest("share out of range");
        uint256 e = bytes(p.embeddingModel).length;
        if (e == 0 || e > MAX_MODEL_NAME_BYTES) revert InvalidRequest("bad embedding model name");
    }

    // ---------------------------------------------------------------- results

    /// @notice Submits the agreed result of `requestId`. For a request made through this contract
    ///         the result needs the signatures its frame implies (at least the floor), pays the
    ///         attesting nodes and calls the consumer back. Any other request (made on another
    ///         chain, or by a peer of the network) is *foreign*: its result is recorded with at
    ///         least `minSignaturesFloor` signatures, without payment or callback, so that results
    ///         can be mirrored across chains.
    /// @param output the selected output text
    /// @param jointHash hash of the accepted set the nodes signed
    /// @param acceptedNodes attesting accepted nodes, strictly ascending by address
    /// @param signatures for each node, its 65-byte signature (r ‖ s ‖ v) over the EIP-191
    ///        hash of `sha256("rakis/result/v1" ‖ 0x00 ‖ requestId ‖ sha256(output) ‖ jointHash)`
    function submitResult(
        bytes32 requestId,
        string calldata output,
        bytes32 jointHash,
        address[] calldata acceptedNodes,
        bytes[] calldata signatures
    ) external {
        Request storage r = requests[requestId];
        bool foreign = r.requester == address(0);
        if (r.fulfilled) revert AlreadyFulfilled(requestId);
        if (!foreign && block.timestamp > r.expiresAt) revert RequestExpired(requestId, r.expiresAt);
        if (r.refunded) revert AlreadyRefunded(requestId);
        if (acceptedNodes.length != signatures.length) {
            revert LengthMismatch(acceptedNodes.length, signatures.length);
        }
        uint256 required = foreign ? minSignaturesFloor : r.minSignatures;
        if (acceptedNodes.length < required) revert TooFewSignatures(acceptedNodes.length, required);

        bytes32 outputHash = sha256(bytes(output));
        bytes32 digest =
            _ethSigned(sha256(abi.encodePacked("rakis/result/v1", bytes1(0), requestId, outputHash, jointHash)));
        address previous = address(0);
        for (uint256 i = 0; i < acceptedNodes.length; i++) {
            address node = acceptedNodes[i];
            if (node <= previous) revert SignersNotSorted(i);
            previous = node;
            if (_recover(digest, signatures[i]) != node) revert InvalidSignature(i, node);
            if (!registered[node]) revert NodeNotRegistered(node);
        }

        r.fulfilled = true;
        r.outputHash = outputHash;
        outputs[requestId] = output;
        if (foreign) {
            emit ResultSubmitted(requestId, outputHash, jointHash, acceptedNodes, true, false);
            return;
        }

        uint256 n = acceptedNodes.length;
        uint256 share = r.payment / n;
        for (uint256 i = 0; i < n; i++) {
            rewards[acceptedNodes[i]] += share;
        }
        // Rounding dust goes to the first node.
        rewards[acceptedNodes[0]] += r.payment - share * n;

        bool ok = true;
        if (r.callback != address(0)) {
            uint256 gasForCall = r.callbackGas;
            // EIP-150 passes at most 63/64 of what is left: make sure the callback can get all of
            // its gas, so a submitter cannot starve it on purpose.
            uint256 needed = gasForCall + gasForCall / 63 + 10_000;
            if (gasleft() < needed) revert InsufficientGas(gasleft(), needed);
            try IRakisConsumer(r.callback).rakisCallback{gas: gasForCall}(requestId, output) {}
            catch {
                ok = false;
            }
        }
        emit ResultSubmitted(requestId, outputHash, jointHash, acceptedNodes, false, ok);
    }

    /// @notice Returns the payment of an expired, unfulfilled request to its requester.
    function refund(bytes32 requestId) external {
        Request storage r = requests[requestId];
        if (r.requester == address(0)) revert UnknownRequest(requestId);
        if (r.fulfilled) revert AlreadyFulfilled(requestId);
        if (r.refunded) revert AlreadyRefunded(requestId);
        if (block.timestamp <= r.expiresAt) revert NotExpired(requestId, r.expiresAt);
        r.refunded = true;
        uint256 amount = r.payment;
        (bool sent,) = r.requester.call{value: amount}("");
        if (!sent) revert TransferFailed(r.requester, amount);
        emit Refunded(requestId, r.requester, amount);
    }

    /// @notice Sends the caller's rewards to `to`.
    function withdraw(address payable to) external {
        uint256 amount = rewards[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        rewards[msg.sender] = 0;
        (bool sent,) = to.call{value: amount}("");
        if (!sent) revert TransferFailed(to, amount);
        emit Withdrawn(msg.sender, to, amount);
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

    // ---------------------------------------------------------------- signatures

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

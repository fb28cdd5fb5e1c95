// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import "./RakisOracle.sol";

/// @title A sample consumer of the Rakis oracle
/// @notice Asks a question with the oracle's default frame and keeps the answers it is called
///         back with.
contract SampleConsumer is IRakisConsumer {
    RakisOracle public immutable oracle;
    /// @notice Deployer; the only one who may claim refunds.
    address public immutable owner;
    /// @notice Answers received, by Rakis request id.
    mapping(bytes32 => string) public answers;
    /// @notice The last request made.
    bytes32 public lastRequest;
    /// @notice The last answer received.
    string public lastAnswer;

    event Asked(bytes32 indexed requestId, string prompt);
    event Answered(bytes32 indexed requestId, string output);

    error NotOracle(address caller);
    error NotOwner(address caller);

    constructor(RakisOracle oracle_) {
        oracle = oracle_;
        owner = msg.sender;
    }

    /// @notice Asks `prompt` of `model`, paying what is sent along.
    /// @param quorum commits needed; maxTimeMs the commit deadline after the request's block
    function ask(string calldata prompt, string calldata model, uint32 quorum, uint64 maxTimeMs)
        external
        payable
        returns (bytes32 requestId)
    {
        string[] memory models = new string[](1);
        models[0] = model;
        RakisOracle.RequestParams memory p = RakisOracle.RequestParams({
            prompt: prompt,
            acceptedModels: models,
            maxTokens: 48,
            temperatureMilli: 0,
            topPMilli: 1000,
            quorum: quorum,
            maxTimeMs: maxTimeMs,
            secDistancePpm: 300_000,
            secPercentagePpm: 600_000,
            embeddingModel: "sentence-transformers/all-MiniLM-L6-v2"
        });
        requestId = oracle.requestInference{value: msg.value}(p, address(this), 200_000);
        lastRequest = requestId;
        emit Asked(requestId, prompt);
    }

    /// @notice Pulls what the oracle credits this contract (refunds of expired requests) to `to`
    ///         (owner only).
    function claim(address payable to) external {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        oracle.withdraw(to);
    }

    /// @inheritdoc IRakisConsumer
    function rakisCallback(bytes32 requestId, string calldata output) external {
        if (msg.sender != address(oracle)) revert NotOracle(msg.sender);
        answers[requestId] = output;
        lastAnswer = output;
        emit Answered(requestId, output);
    }
}

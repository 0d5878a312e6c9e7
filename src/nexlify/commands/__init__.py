"""The ``nexlify`` commands. Each module registers one command's options and handler; the CLI
imports only the command being run (:func:`nexlify.cli.build_parser`), so this package's own
import stays free of torch and pandas."""

COMMAND_HELP: dict[str, str] = {
    "train": "multi-start training, selection on validation data, auto-retraining",
    "baselines": "run the baseline policies through the simulator and print their metrics",
    "ablate": "train the full config and each component removed in turn; IQM + bootstrap table",
    "backtest": "run a saved model through the simulator beside the baselines",
    "audit-lookahead": "prove that features and decisions before a cut do not change when data "
    "is cut",
    "report": "rebuild the HTML report of a training run",
    "walk-forward": "train and test over rolling or anchored folds; out-of-sample metrics per fold",
    "study": "the default pipeline over whole test years, each traded once; model vs baselines "
    "with a deflated Sharpe",
    "meta-init": "Reptile meta-learning of an initialisation from windows of the training candles",
    "tune": "Optuna search of agent (and, opt-in, risk) settings on the validation score",
    "data": "download, list, check and import market data",
    "paper": "paper-trade a saved model on live or replayed candles (state in SQLite)",
    "preflight": "check machine, memory, disk and data before training",
}
"""Every command, in the order ``nexlify --help`` lists them, with its one-line help."""

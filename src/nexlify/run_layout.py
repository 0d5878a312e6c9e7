"""The names of the files a pipeline run writes into its output folder.

Kept apart from the pipeline so that the code reading a run's files (evaluation, reports, the
paper trader) needs nothing of the code that writes them.
"""

SUMMARY_FILE = "complete_training_summary.json"
LOG_FILE = "training.log"
FINAL_MODEL = "final_model.pt"
ENSEMBLE_MODEL = "ensemble_model.pt"

"""word2vec's data: the vocabulary, the id stream (the corpus encoded once), the two
parallel passes that make them, the training schedule, the model's state and its
checkpoints."""

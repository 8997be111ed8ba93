"""Corpus text: streamed files and folders (compressed or not), gensim's corpus readers, the
bundled sample corpus."""

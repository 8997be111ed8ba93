"""gensim's callback base class, for scripts that do not import gensim: subclass it and
override the hooks you need. `Word2Vec` calls them in the parent process, with the model,
whose `wv` then holds the current vectors. `on_epoch_end` may return True (or set
`model.stop_training = True`) to end training after that epoch; the vectors, model and
report are still written."""


class CallbackAny2Vec:
    def on_train_begin(self, model):
        pass

    def on_epoch_begin(self, model):
        pass

    def on_epoch_end(self, model):
        pass

    def on_train_end(self, model):
        pass

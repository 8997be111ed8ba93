"""gensim's callback base class, for scripts that do not import gensim: subclass it and
override the hooks you need. `Word2Vec` calls them in the parent process, with the model,
whose `wv` then holds the current vectors (read them; writes to the weights in a callback
are not carried into training). Setting `model.stop_training = True` in `on_epoch_end`
ends training after that epoch; the vectors, model and report are still written. What a
hook returns is ignored, as in gensim."""


class CallbackAny2Vec:
    def on_train_begin(self, model):
        pass

    def on_epoch_begin(self, model):
        pass

    def on_epoch_end(self, model):
        pass

    def on_train_end(self, model):
        pass

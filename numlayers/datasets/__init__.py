"""Keras 0.3's ``keras.datasets``, for the datasets whose files load without running
code: :mod:`.mnist` (NumPy's ``.npz``) and :mod:`.cifar10` (its binary version).

Each ``load_data()`` downloads its files once, through
:func:`numlayers.utils.data_utils.get_file`, and returns ``(X_train, y_train),
(X_test, y_test)`` as Keras 0.3's did. Keras 0.3's own files were Python pickles,
which run code as they load; numlayers reads these other published forms of the same
data instead.
"""

from numlayers.datasets import cifar10, mnist

__all__ = ["cifar10", "mnist"]

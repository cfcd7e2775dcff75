"""Emulators of the Kubernetes API and the Feldera API, served over real HTTP on 127.0.0.1.

They exist because neither a kube-apiserver nor a Feldera server can be installed on the machines
this project is developed and tested on. Real clients (kubectl, kopf, the Feldera SDK) use them
unchanged.
"""

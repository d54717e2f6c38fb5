"""OHIF Viewer v3, installed beside Vireo and served same-origin under /ohif behind Vireo's login.

`location` says where the dist lives and whether it is there, `install` fetches and prepares it
(`vireo ohif install`, scripts/setup.sh), `config` writes its app-config.js, `serve` answers
/ohif/… requests. Only `serve` imports web libraries, so set-up stays quick.
"""

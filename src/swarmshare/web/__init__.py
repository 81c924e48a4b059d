"""The web page: plain HTML, CSS and a little JavaScript, served by the daemon itself."""

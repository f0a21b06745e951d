document.body.insertAdjacentHTML("afterbegin","<p>The page is not built: run web/build.sh</p>");
